"""The repository against a real SQLite file: migrations, jobs, scope, history, search."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from storage import (
    ImageRecord,
    JobRecord,
    JobStatus,
    Repository,
    Scope,
    UserSettings,
    open_database,
)
from storage.database import migrate, migrations
from tests.storage.factories import make_job

GUILD = Scope(guild_id=1, user_id=10, channel_ids=frozenset({100}))  # make_job's channel
OTHER_GUILD = Scope(guild_id=2, user_id=10)
DM = Scope(guild_id=None, user_id=10)
OTHER_DM = Scope(guild_id=None, user_id=11)


async def _scalar(repo: Repository, sql: str, *params: object) -> object:
    async with repo.db.execute(sql, params) as cursor:
        row = await cursor.fetchone()
    assert row is not None
    return row[0]


def _image(job_id: str, index: int, seed: int = 42) -> ImageRecord:
    return ImageRecord(job_id=job_id, index=index, seed=seed + index,
                       path=f"ab/{job_id}{index}.png", sha256=f"{index:064x}", width=128,
                       height=128, size_bytes=1000 + index)


async def _done(repo: Repository, prompt: str = "a red fox in the snow", **fields: object):
    job = await repo.insert_job(make_job(prompt=prompt, **fields))
    assert job is not None
    await repo.complete_job(job.id, [_image(job.id, 0)])
    return job


# ---- the database file ----------------------------------------------------------------------


async def test_migrations_applied_once_and_idempotent(db_path: Path) -> None:
    latest = migrations()[-1][0]
    assert latest >= 1
    repo = Repository(await open_database(db_path))
    assert db_path.exists()
    assert await _scalar(repo, "PRAGMA user_version") == latest
    job = await repo.insert_job(make_job())
    assert job is not None
    assert await migrate(repo.db) == latest  # nothing left to apply
    await repo.close()

    again = Repository(await open_database(db_path))  # a restart: no migration runs twice
    try:
        assert await _scalar(again, "PRAGMA user_version") == latest
        assert await again.job(job.id) == job
        tables = await _scalar(again, "SELECT count(*) FROM sqlite_master WHERE name = 'jobs'")
        assert tables == 1
    finally:
        await again.close()


async def test_wal_and_foreign_keys(repo: Repository) -> None:
    assert await _scalar(repo, "PRAGMA journal_mode") == "wal"
    assert await _scalar(repo, "PRAGMA foreign_keys") == 1
    with pytest.raises(sqlite3.IntegrityError):
        await repo.complete_job("nosuchjob", [_image("nosuchjob", 0)])


async def test_a_failing_migration_leaves_nothing_behind(db_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    await (await open_database(db_path)).close()  # the file, at the latest version
    first = migrations()
    broken = (first[-1][0] + 1, "9999_broken.sql",
              "CREATE TABLE half_done (x INTEGER);\nINSERT INTO missing_table VALUES (1);")
    monkeypatch.setattr("storage.database.migrations", lambda: [*first, broken])
    with pytest.raises(sqlite3.OperationalError):
        await open_database(db_path)
    monkeypatch.undo()
    repo = Repository(await open_database(db_path))
    try:
        assert await _scalar(repo, "PRAGMA user_version") == first[-1][0]
        leftover = "SELECT count(*) FROM sqlite_master WHERE name = 'half_done'"
        assert await _scalar(repo, leftover) == 0
    finally:
        await repo.close()


# ---- jobs -----------------------------------------------------------------------------------


async def test_insert_and_get_job(repo: Repository) -> None:
    job = make_job(negative="blurry", strength=0.5, parent_job=None, init_image="ab" * 32,
                   application_id=555, interaction_token="tok", guidance=6.5, seed=4294967295)
    stored = await repo.insert_job(job)
    assert stored == job
    assert await repo.job(job.id) == job
    assert (await repo.job(job.id)).status is JobStatus.QUEUED  # type: ignore[union-attr]
    assert await repo.job("missing1") is None


async def test_taken_id_is_replaced(repo: Repository) -> None:
    first = await repo.insert_job(make_job(id="abcdefgh"))
    second = await repo.insert_job(make_job(id="abcdefgh", prompt="another"))
    assert first is not None and second is not None
    assert second.id != "abcdefgh" and len(second.id) == 8
    assert (await repo.job(second.id)).prompt == "another"  # type: ignore[union-attr]
    assert (await repo.job("abcdefgh")).prompt == "a red fox in the snow"  # type: ignore[union-attr]


async def test_child_jobs_link_to_their_parent(repo: Repository) -> None:
    parent = await _done(repo)
    child = await repo.insert_job(make_job(kind="variation", parent_job=parent.id, parent_index=2))
    assert child is not None
    assert [job.id for job in await repo.children(parent.id, GUILD)] == [child.id]
    with pytest.raises(sqlite3.IntegrityError):
        await repo.insert_job(make_job(kind="upscale", parent_job="nosuchjb", parent_index=0))
    with pytest.raises(sqlite3.IntegrityError):
        await repo.insert_job(make_job(kind="remix"))


async def test_job_in_scope(repo: Repository) -> None:
    guild_job = await repo.insert_job(make_job(guild_id=1, user_id=10))
    dm_job = await repo.insert_job(make_job(guild_id=None, user_id=10))
    assert guild_job is not None and dm_job is not None
    assert await repo.job_in_scope(guild_job.id, GUILD) == guild_job
    # anyone in the server who can view its channel
    assert await repo.job_in_scope(guild_job.id, Scope(1, 99, frozenset({100}))) == guild_job
    assert await repo.job_in_scope(guild_job.id, OTHER_GUILD) is None
    assert await repo.job_in_scope(guild_job.id, DM) is None
    assert await repo.job_in_scope(dm_job.id, DM) == dm_job
    assert await repo.job_in_scope(dm_job.id, OTHER_DM) is None
    assert await repo.job_in_scope(dm_job.id, GUILD) is None
    assert await repo.job_in_scope("missing1", GUILD) is None
    assert guild_job.visible_to(GUILD) and not guild_job.visible_to(OTHER_GUILD)
    assert dm_job.visible_to(DM) and not dm_job.visible_to(OTHER_DM)


async def test_jobs_of_channels_one_cannot_view_are_shown_to_their_author_alone(
        repo: Repository) -> None:
    general, staff = 100, 200
    public = await _done(repo, "a red fox in the open", user_id=10, channel_id=general)
    hidden = await _done(repo, "a red fox of the staff", user_id=10, channel_id=staff)
    own = await _done(repo, "a red fox of bob's", user_id=11, channel_id=staff)
    await repo.set_message(hidden.id, 555)
    child = await repo.insert_job(make_job(kind="variation", parent_job=public.id,
                                           parent_index=1, channel_id=staff))
    assert child is not None
    alice = Scope(1, 10, frozenset({general, staff}))
    bob = Scope(1, 11, frozenset({general}))  # #staff is hidden from him, his own job is not
    nobody = Scope(1, 12)  # sees no channel: only their own jobs, of which there are none

    def found(job: JobRecord | None) -> str | None:
        return job.id if job is not None else None

    assert found(await repo.job_in_scope(hidden.id, alice)) == hidden.id
    assert found(await repo.job_in_scope(hidden.id, bob)) is None
    assert found(await repo.job_in_scope(own.id, bob)) == own.id
    assert found(await repo.job_in_scope(public.id, nobody)) is None
    assert found(await repo.job_for_message(555, alice)) == hidden.id
    assert found(await repo.job_for_message(555, bob)) is None
    assert [job.id for job in await repo.children(public.id, alice)] == [child.id]
    assert await repo.children(public.id, bob) == []

    page, total = await repo.history(alice)
    assert [job.id for job in page] == [own.id, hidden.id, public.id] and total == 3
    page, total = await repo.history(bob)
    assert [job.id for job in page] == [own.id, public.id] and total == 2
    assert (await repo.history(bob, search="staff"))[1] == 0
    assert (await repo.history(bob, user_id=10))[1] == 1
    assert await repo.history(nobody) == ([], 0)
    for typed in ("", "red fox", "staff", hidden.id[:4], hidden.id):
        assert hidden.id not in {job.id for job in await repo.search_prompts(bob, typed)}, typed
    assert {job.id for job in await repo.search_prompts(bob, "red fox")} == {public.id, own.id}
    assert (await repo.search_prompts(alice, hidden.id[:5]))[0].id == hidden.id

    assert hidden.visible_to(alice) and not hidden.visible_to(bob) and own.visible_to(bob)
    assert not public.visible_to(nobody)


async def test_queue_limit_per_user(repo: Repository) -> None:
    jobs = [await repo.insert_job(make_job(user_id=10), max_active=3) for _ in range(3)]
    assert all(job is not None for job in jobs)
    refused = make_job(user_id=10)
    assert await repo.insert_job(refused, max_active=3) is None
    assert await repo.job(refused.id) is None
    assert await repo.active_job_count(10) == 3
    # another user is not held back, in any server
    assert await repo.insert_job(make_job(user_id=11, guild_id=2), max_active=3) is not None
    # running jobs still count; a finished one frees a place
    await repo.mark_running(jobs[0].id)  # type: ignore[union-attr]
    assert await repo.insert_job(make_job(user_id=10), max_active=3) is None
    await repo.finish_job(jobs[0].id, JobStatus.DONE)  # type: ignore[union-attr]
    assert await repo.active_job_count(10) == 2
    assert await repo.insert_job(make_job(user_id=10), max_active=3) is not None
    assert await repo.insert_job(make_job(user_id=10), max_active=3) is None
    await repo.finish_job(jobs[1].id, JobStatus.CANCELLED)  # type: ignore[union-attr]
    assert await repo.insert_job(make_job(user_id=10), max_active=3) is not None
    # without a limit (restarts, internal work) the insert always happens
    assert await repo.insert_job(make_job(user_id=10)) is not None


async def test_status_changes(repo: Repository) -> None:
    job = await repo.insert_job(make_job())
    assert job is not None
    await repo.mark_running(job.id)
    running = await repo.job(job.id)
    assert running is not None and running.status is JobStatus.RUNNING
    assert running.started_at is not None
    await repo.finish_job(job.id, JobStatus.FAILED, "out of memory")
    failed = await repo.job(job.id)
    assert failed is not None and failed.status is JobStatus.FAILED
    assert failed.error == "out of memory" and failed.finished_at is not None
    await repo.mark_running(job.id)  # only a queued job starts
    assert (await repo.job(job.id)).status is JobStatus.FAILED  # type: ignore[union-attr]


async def test_complete_job_writes_images_and_status(repo: Repository) -> None:
    job = await repo.insert_job(make_job(count=2, interaction_token="tok"))
    assert job is not None
    await repo.mark_running(job.id)
    images = [_image(job.id, 0), _image(job.id, 1)]
    await repo.complete_job(job.id, images)
    done = await repo.job(job.id)
    assert done is not None and done.status is JobStatus.DONE and done.finished_at is not None
    assert await repo.images(job.id) == images
    await repo.set_delivered(job.id, 777)
    delivered = await repo.job(job.id)
    assert delivered is not None
    assert delivered.message_id == 777 and delivered.interaction_token is None


async def test_complete_job_is_all_or_nothing(repo: Repository) -> None:
    job = await repo.insert_job(make_job(count=2))
    assert job is not None
    await repo.mark_running(job.id)
    with pytest.raises(sqlite3.IntegrityError):
        # the second image names a job that does not exist: nothing may be written
        await repo.complete_job(job.id, [_image(job.id, 0), _image("nosuchjb", 1)])
    assert await repo.images(job.id) == []
    assert (await repo.job(job.id)).status is JobStatus.RUNNING  # type: ignore[union-attr]
    assert not repo.db.in_transaction
    # and the connection is usable afterwards
    await repo.complete_job(job.id, [_image(job.id, 0), _image(job.id, 1)])
    assert len(await repo.images(job.id)) == 2


async def test_unfinished_jobs_oldest_first(repo: Repository) -> None:
    queued = await repo.insert_job(make_job())
    running = await repo.insert_job(make_job(guild_id=None))
    delivered = await repo.insert_job(make_job())
    failed = await repo.insert_job(make_job())
    later = await repo.insert_job(make_job(user_id=11))
    assert queued and running and delivered and failed and later
    await repo.mark_running(running.id)
    await repo.complete_job(delivered.id, [_image(delivered.id, 0)])
    await repo.set_delivered(delivered.id, 1234)
    await repo.finish_job(failed.id, JobStatus.FAILED, "boom")
    await repo.set_delivered(failed.id, None)
    assert [job.id for job in await repo.unfinished_jobs()] == [queued.id, running.id, later.id]


async def test_a_job_that_cannot_be_delivered_is_given_up(repo: Repository) -> None:
    job = await _done(repo, interaction_token="token", message_id=111)
    assert [found.id for found in await repo.unfinished_jobs()] == [job.id]
    assert await repo.count_delivery_attempt(job.id) == 1
    assert await repo.count_delivery_attempt(job.id) == 2
    await repo.give_up_delivery(job.id, "404 Unknown Channel (10003)")
    assert await repo.unfinished_jobs() == []
    stored = await repo.job(job.id)
    assert stored is not None and stored.status is JobStatus.DONE
    assert (stored.delivery_attempts, stored.delivery_error) == (2, "404 Unknown Channel (10003)")
    assert stored.interaction_token is None and stored.delivered_at is None
    # the partial index still serves the start-up query
    async with repo.db.execute(
        "EXPLAIN QUERY PLAN SELECT id FROM jobs WHERE status IN ('queued', 'running')"
        " OR (status = 'done' AND delivered_at IS NULL AND delivery_error IS NULL)"
        " ORDER BY created_at"
    ) as cursor:
        plan = " ".join(str(row[3]) for row in await cursor.fetchall())
    assert "jobs_unfinished" in plan, plan


async def test_a_job_moved_to_a_channel_message_forgets_its_token(repo: Repository) -> None:
    job = await repo.insert_job(make_job(interaction_token="token", message_id=111))
    assert job is not None
    await repo.set_channel_message(job.id, 222)
    stored = await repo.job(job.id)
    assert stored is not None
    assert (stored.message_id, stored.interaction_token) == (222, None)


# ---- history and search ---------------------------------------------------------------------


async def test_history_pages_newest_first(repo: Repository) -> None:
    mine = [await _done(repo, f"picture number {i}", user_id=10 + i % 2) for i in range(20)]
    await _done(repo, "elsewhere", guild_id=2)
    await _done(repo, "in a dm", guild_id=None)
    await repo.insert_job(make_job(prompt="still queued"))
    newest_first = [job.id for job in reversed(mine)]

    page, total = await repo.history(GUILD)
    assert total == 20
    assert [job.id for job in page] == newest_first[:9]
    page, total = await repo.history(GUILD, offset=9)
    assert [job.id for job in page] == newest_first[9:18]
    page, total = await repo.history(GUILD, offset=18)
    assert [job.id for job in page] == newest_first[18:] and total == 20

    page, total = await repo.history(GUILD, user_id=11)
    assert total == 10
    assert all(job.user_id == 11 for job in page) and len(page) == 9

    page, total = await repo.history(OTHER_GUILD)
    assert [job.prompt for job in page] == ["elsewhere"] and total == 1
    page, total = await repo.history(DM)
    assert [job.prompt for job in page] == ["in a dm"] and total == 1
    assert await repo.history(OTHER_DM) == ([], 0)


@pytest.fixture
def prompts() -> list[str]:
    return [
        "a red fox in the snow",
        "red panda next to a fox",
        "lighthouse at dusk",
        "the Lighthouse keeper",
        "fox, red",
        "café au lait",
        "foxglove flowers",
    ]


async def _search(repo: Repository, query: str, scope: Scope = GUILD) -> set[str]:
    page, total = await repo.history(scope, search=query, limit=50)
    assert total == len(page)
    return {job.prompt for job in page}


async def test_full_text_search(repo: Repository, prompts: list[str]) -> None:
    for prompt in prompts:
        await _done(repo, prompt)
    await _done(repo, "a red fox elsewhere", guild_id=2)

    assert await _search(repo, '"red fox"') == {"a red fox in the snow"}
    assert await _search(repo, "red fox") == {"a red fox in the snow", "red panda next to a fox",
                                              "fox, red"}
    assert await _search(repo, "lig") == {"lighthouse at dusk", "the Lighthouse keeper"}
    assert await _search(repo, "LIGHTHOUSE") == {"lighthouse at dusk", "the Lighthouse keeper"}
    assert await _search(repo, "cafe") == {"café au lait"}  # diacritics do not matter
    # the last bare word also matches as a prefix
    assert await _search(repo, "fox") == {"a red fox in the snow", "red panda next to a fox",
                                          "fox, red", "foxglove flowers"}
    assert await _search(repo, "fox red") == {"a red fox in the snow", "red panda next to a fox",
                                              "fox, red"}
    assert await _search(repo, '"red fox" snow') == {"a red fox in the snow"}
    assert await _search(repo, "zebra") == set()
    assert await _search(repo, "red fox", OTHER_GUILD) == {"a red fox elsewhere"}


HOSTILE = ['"', '""', "'", "AND OR NOT", "AND", "NOT fox", "fox OR", "*", "**", "fox*", "NEAR(",
           "NEAR(fox red, 2)", "prompt:fox", "col:val", "{prompt}: fox", "-x", "-", "^", "^fox",
           "(", ")", "((fox", "fox)", '"unbalanced', 'red "fox', "🦊", "🦊 fox", "fox 🦊 red", "+",
           ":", "\\", "%", "_", "'; DROP TABLE jobs; --", "\x00", "   ", "a" * 2000,
           "fox " * 300, "ü", "日本語", "x AND (y OR"]


@pytest.mark.parametrize("query", HOSTILE)
async def test_hostile_queries_never_raise(repo: Repository, prompts: list[str],
                                           query: str) -> None:
    for prompt in prompts:
        await _done(repo, prompt)
    found = await _search(repo, query)
    assert found <= set(prompts)
    suggestions = await repo.search_prompts(GUILD, query)
    assert {job.prompt for job in suggestions} <= set(prompts)
    assert await _scalar(repo, "SELECT count(*) FROM jobs") == len(prompts)  # nothing dropped


async def test_operators_are_plain_words(repo: Repository) -> None:
    await _done(repo, "fox and hound")
    await _done(repo, "fox or hound")
    await _done(repo, "a fox")
    assert await _search(repo, "fox AND hound") == {"fox and hound"}
    assert await _search(repo, "fox OR") == {"fox or hound"}
    assert await _search(repo, "🦊 fox") == {"fox and hound", "fox or hound", "a fox"}


async def test_search_prompts_scope_limit_and_job_ids(repo: Repository) -> None:
    jobs = [await _done(repo, f"a red fox, take {i}") for i in range(30)]
    foreign = await _done(repo, "a red fox far away", guild_id=2)
    dm = await _done(repo, "a red fox in private", guild_id=None)
    queued = await repo.insert_job(make_job(prompt="a red fox not done yet"))
    assert queued is not None

    found = await repo.search_prompts(GUILD, "red fox")
    assert len(found) == 25
    assert all(job.guild_id == 1 and job.status is JobStatus.DONE for job in found)
    assert len(await repo.search_prompts(GUILD, "red fox", limit=5)) == 5

    newest = await repo.search_prompts(GUILD, "")
    assert [job.id for job in newest] == [job.id for job in reversed(jobs)][:25]

    target = jobs[7]
    by_id = await repo.search_prompts(GUILD, target.id[:4])
    assert by_id and by_id[0].id == target.id
    assert (await repo.search_prompts(GUILD, target.id.upper()))[0].id == target.id
    assert await repo.search_prompts(GUILD, foreign.id) == []
    assert await repo.search_prompts(GUILD, queued.id) == []
    assert [job.id for job in await repo.search_prompts(DM, "red fox")] == [dm.id]
    assert await repo.search_prompts(OTHER_DM, "red fox") == []
    assert [job.id for job in await repo.search_prompts(OTHER_GUILD, foreign.id[:5])] == [
        foreign.id]


# ---- settings and favourites ------------------------------------------------------------------


async def test_settings_round_trip(repo: Repository) -> None:
    assert await repo.settings(10) == UserSettings(10)
    saved = UserSettings(10, aspect="16:9", steps=20, guidance=5.5, negative="blurry",
                         model="tiny", count=2, sampler="ddim", remix=True)
    await repo.save_settings(saved)
    assert await repo.settings(10) == saved
    assert await repo.settings(11) == UserSettings(11)
    changed = UserSettings(10, aspect="1:1", remix=False)
    await repo.save_settings(changed)
    assert await repo.settings(10) == changed
    await repo.reset_settings(10)
    assert await repo.settings(10) == UserSettings(10)
    await repo.reset_settings(10)  # resetting twice is fine


async def test_toggle_favourite(repo: Repository) -> None:
    job = await _done(repo, "a favourite fox")
    other = await _done(repo, "not a favourite")
    assert await repo.toggle_favourite(10, job.id, 1) is True
    assert await repo.toggle_favourite(11, job.id, 1) is True  # per user
    page, total = await repo.history(GUILD, favourites_of=10)
    assert [j.id for j in page] == [job.id] and total == 1
    assert await repo.toggle_favourite(10, job.id, 1) is False
    assert await repo.history(GUILD, favourites_of=10) == ([], 0)
    assert await repo.toggle_favourite(10, job.id, 1) is True
    assert await repo.toggle_favourite(10, job.id, 2) is True  # per image
    assert await _scalar(repo, "SELECT count(*) FROM favourites WHERE user_id = 10") == 2
    assert other.id not in {j.id for j in (await repo.history(GUILD, favourites_of=11))[0]}
    with pytest.raises(sqlite3.IntegrityError):
        await repo.toggle_favourite(10, "nosuchjb", 0)


async def test_deleted_messages_are_kept_per_message(repo: Repository) -> None:
    job = await _done(repo, "a fox")
    other = await _done(repo, "a dog")
    await repo.record_deleted_message(501, job.id, 2, 10)
    await repo.record_deleted_message(502, job.id, 0, 11)
    await repo.record_deleted_message(503, job.id, 2, 10)  # image 3 posted and deleted twice
    await repo.record_deleted_message(501, job.id, 2, 12)  # the same message again: kept once
    assert await repo.deleted_pictures([job.id, other.id, "nosuchjb"]) == {job.id: (0, 2)}
    assert await repo.deleted_pictures([]) == {}
    assert await _scalar(repo, "SELECT deleted_by FROM deleted_messages WHERE message_id = 501") \
        == 10
    stored = await repo.job(job.id)  # the job itself is not marked
    assert stored is not None and stored.deleted_at is None
    with pytest.raises(sqlite3.IntegrityError):
        await repo.record_deleted_message(504, "nosuchjb", 0, 10)


async def test_full_text_index_stays_in_sync(repo: Repository) -> None:
    job = await _done(repo, "a lighthouse at night")
    kept = await _done(repo, "a lighthouse by day")
    assert await _search(repo, "night") == {"a lighthouse at night"}
    await repo.db.execute("UPDATE jobs SET prompt = ? WHERE id = ?", ("a windmill at noon", job.id))
    assert await _search(repo, "night") == set()
    assert await _search(repo, "windmill") == {"a windmill at noon"}
    await repo.db.execute("DELETE FROM images WHERE job_id = ?", (job.id,))
    await repo.db.execute("DELETE FROM jobs WHERE id = ?", (job.id,))
    assert await _search(repo, "windmill") == set()
    assert await _search(repo, "lighthouse") == {"a lighthouse by day"}
    await repo.finish_job(kept.id, JobStatus.DONE)  # a status change leaves the index alone
    assert await _search(repo, "lighthouse") == {"a lighthouse by day"}
    # FTS5's own check that the index matches the jobs table
    await repo.db.execute("INSERT INTO jobs_fts (jobs_fts, rank) VALUES ('integrity-check', 1)")
