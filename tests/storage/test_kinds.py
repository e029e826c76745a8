"""Job kinds are defined once: `JobKind` and the `job_kinds` table agree, and the migration that
made the table kept every job, image and search of an existing database."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import aiosqlite
import pytest

from storage import JobKind, Repository, Scope
from storage.database import migrate, migrations, open_database
from tests.storage.factories import make_job


async def test_the_kinds_table_holds_exactly_the_kinds_of_the_code(repo: Repository) -> None:
    async with repo.db.execute("SELECT name FROM job_kinds") as cursor:
        rows = {row[0] for row in await cursor.fetchall()}
    assert rows == {str(kind) for kind in JobKind}


async def test_a_job_of_an_unknown_kind_is_refused(repo: Repository) -> None:
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        await repo.insert_job(make_job(kind="collage"))  # type: ignore[arg-type]


async def test_an_edit_keeps_its_canvas_and_mask(repo: Repository) -> None:
    job = make_job(kind=JobKind.ZOOM, mode="inpaint", init_image="ab" * 32,
                   mask_image="cd" * 32, box="32,32,64,64", edit="zoom 2", strength=1.0)
    saved = await repo.insert_job(job)
    assert saved is not None
    again = await repo.job(job.id)
    assert again == job
    assert again.kind is JobKind.ZOOM


async def test_describe_jobs_stay_out_of_lists_of_pictures(repo: Repository) -> None:
    picture = await repo.insert_job(make_job(status="done", prompt="a red fox"))
    described = await repo.insert_job(make_job(kind=JobKind.DESCRIBE, status="done",
                                               prompt="a red fox", suggestions="a\nb\nc\nd"))
    assert picture is not None and described is not None
    scope = Scope(1, 10, frozenset({100}))
    jobs, total = await repo.history(scope)
    assert [job.id for job in jobs] == [picture.id] and total == 1
    assert [job.id for job in await repo.search_prompts(scope, "fox")] == [picture.id]
    assert [job.id for job in await repo.search_prompts(scope, "")] == [picture.id]
    assert [job.id for job in await repo.gallery(scope)] == [picture.id]
    again = await repo.job(described.id)
    assert again is not None and again.suggestion_list == ["a", "b", "c", "d"]


async def test_the_kinds_migration_keeps_an_existing_database(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    path = tmp_path / "atelier.db"
    before = [m for m in migrations() if m[1] < "0007"]
    db = await aiosqlite.connect(path, isolation_level=None)
    await db.execute("PRAGMA foreign_keys = ON")
    monkeypatch.setattr("storage.database.migrations", lambda: before)
    assert await migrate(db) == 6
    monkeypatch.undo()
    await db.executescript("""
        BEGIN;
        INSERT INTO jobs (id, guild_id, channel_id, user_id, kind, prompt, model, sampler, width,
                          height, steps, guidance, seed, count, status, created_at)
        VALUES ('aaaaaaaa', 1, 2, 3, 'imagine', 'a red fox in the snow', 'tiny', 'euler', 128,
                128, 30, 7, 42, 2, 'done', 1.0);
        INSERT INTO jobs (id, guild_id, channel_id, user_id, kind, parent_job, parent_index,
                          prompt, model, sampler, width, height, steps, guidance, strength, seed,
                          count, init_image, status, created_at)
        VALUES ('bbbbbbbb', 1, 2, 3, 'variation', 'aaaaaaaa', 1, 'a blue whale', 'tiny',
                'euler', 128, 128, 30, 7, 0.7, 7, 4, 'ee', 'queued', 2.0);
        INSERT INTO images (job_id, idx, seed, path, sha256, width, height, size_bytes)
        VALUES ('aaaaaaaa', 0, 42, 'ee/ee.png', 'ee', 128, 128, 100);
        INSERT INTO favourites (user_id, job_id, idx, created_at) VALUES (3, 'aaaaaaaa', 0, 3.0);
        COMMIT;
    """)
    await db.close()

    repo = Repository(await open_database(path))
    try:
        fox, whale = await repo.job("aaaaaaaa"), await repo.job("bbbbbbbb")
        assert fox is not None and whale is not None
        assert (fox.kind, fox.mode, fox.prompt) == (JobKind.IMAGINE, "txt2img",
                                                   "a red fox in the snow")
        assert (whale.kind, whale.mode, whale.init_image) == (JobKind.VARIATION, "img2img", "ee")
        assert [image.sha256 for image in await repo.images("aaaaaaaa")] == ["ee"]
        async with repo.db.execute("PRAGMA foreign_key_check") as cursor:
            assert await cursor.fetchall() == []
        # the full-text index still finds old jobs, and follows new ones
        scope = Scope(1, 3, frozenset({2}))
        found, total = await repo.history(scope, search="fox")
        assert [job.id for job in found] == ["aaaaaaaa"] and total == 1
        new = make_job(prompt="a lighthouse at dusk", guild_id=1, channel_id=2, user_id=3)
        await repo.insert_job(new)
        await repo.complete_job(new.id, [])
        found, _ = await repo.history(scope, search="lighthouse")
        assert [job.id for job in found] == [new.id]
    finally:
        await repo.close()

