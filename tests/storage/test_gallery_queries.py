"""The team gallery's queries against a real SQLite file: what a viewer may see of a server,
filters, pictures by hash, favourites; and on the benchmark's data, pages served from indexes."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from storage import ImageRecord, JobRecord, Repository, Scope
from storage.database import migrations
from tests.storage.factories import make_job
from tests.storage.test_history_bench_data import TABLE_SCAN, _bench, _plans

VIEWER = 10
VISIBLE, HIDDEN = 100, 200
SCOPE = Scope(guild_id=1, user_id=VIEWER, channel_ids=frozenset({VISIBLE}))


def image(job_id: str, index: int, content: str | None = None) -> ImageRecord:
    sha = hashlib.sha256((content or f"{job_id}-{index}").encode()).hexdigest()
    return ImageRecord(job_id, index, 42 + index, f"{sha[:2]}/{sha}.png", sha, 128, 128, 1000)


async def done(repo: Repository, count: int = 1, content: str | None = None,
               **fields: Any) -> JobRecord:
    job = await repo.insert_job(make_job(count=count, **fields))
    assert job is not None
    await repo.complete_job(job.id, [image(job.id, i, content) for i in range(count)])
    return job


async def ids(call: Awaitable[list[JobRecord]]) -> list[str]:
    return [job.id for job in await call]


async def test_a_viewer_sees_the_channels_they_can_view_and_their_own(repo: Repository) -> None:
    shown = await done(repo, user_id=11, channel_id=VISIBLE)
    hidden = await done(repo, user_id=11, channel_id=HIDDEN)
    own_hidden = await done(repo, user_id=VIEWER, channel_id=HIDDEN)
    elsewhere = await done(repo, guild_id=2, user_id=VIEWER, channel_id=VISIBLE)
    dm = await done(repo, guild_id=None, user_id=VIEWER, channel_id=5)
    await repo.insert_job(make_job(user_id=11, channel_id=VISIBLE))  # queued: no pictures yet

    assert await ids(repo.gallery(SCOPE)) == [own_hidden.id, shown.id]
    assert hidden.id not in await ids(repo.gallery(Scope(1, 12, frozenset({VISIBLE}))))
    assert await ids(repo.gallery(Scope(1, 12, frozenset({VISIBLE, HIDDEN})))) == [
        own_hidden.id, hidden.id, shown.id]
    assert await ids(repo.gallery(Scope(1, 12))) == []  # no channel, nothing of their own
    assert await ids(repo.gallery(Scope(None, VIEWER))) == [dm.id]
    assert await ids(repo.gallery(Scope(None, 11))) == []
    assert await ids(repo.gallery(Scope(2, VIEWER, frozenset({VISIBLE})))) == [elsewhere.id]


async def test_gallery_filters_and_pages(repo: Repository) -> None:
    fox = await done(repo, prompt="a red fox in the snow")
    owl = await done(repo, prompt="an owl at dusk", user_id=11, model="anime")
    cub = await done(repo, prompt="a fox cub", user_id=11, kind="variation")
    await repo.toggle_favourite(VIEWER, owl.id, 0)
    assert await ids(repo.gallery(SCOPE)) == [cub.id, owl.id, fox.id]
    assert await ids(repo.gallery(SCOPE, search="fox")) == [cub.id, fox.id]
    assert await ids(repo.gallery(SCOPE, search='"red fox"')) == [fox.id]
    assert await ids(repo.gallery(SCOPE, search='"')) == []
    assert await ids(repo.gallery(SCOPE, user_id=11)) == [cub.id, owl.id]
    assert await ids(repo.gallery(SCOPE, model="anime")) == [owl.id]
    assert await ids(repo.gallery(SCOPE, kind="variation")) == [cub.id]
    assert await ids(repo.gallery(SCOPE, favourites_of=VIEWER)) == [owl.id]
    assert await ids(repo.gallery(SCOPE, favourites_of=11)) == []
    assert await ids(repo.gallery(SCOPE, user_id=11, search="fox")) == [cub.id]
    assert await ids(repo.gallery(SCOPE, limit=2)) == [cub.id, owl.id]
    assert await ids(repo.gallery(SCOPE, limit=2, offset=2)) == [fox.id]


async def test_pictures_by_job_and_by_hash(repo: Repository) -> None:
    first = await done(repo, count=3)
    second = await done(repo, count=1)
    assert await repo.images_of([]) == {}
    found = await repo.images_of([first.id, second.id, "nosuchjb"])
    assert [i.index for i in found[first.id]] == [0, 1, 2]
    assert [i.index for i in found[second.id]] == [0]
    assert "nosuchjb" not in found

    # The same picture in two servers' jobs: both hold it.
    here = await done(repo, content="same bytes")
    there = await done(repo, content="same bytes", guild_id=2)
    sha = hashlib.sha256(b"same bytes").hexdigest()
    holders = await repo.image_holders(sha)
    assert sorted(job.id for job, _ in holders) == sorted([here.id, there.id])
    assert {picture.sha256 for _, picture in holders} == {sha}
    assert await repo.image_holders("0" * 64) == []


async def test_favourite_indexes(repo: Repository) -> None:
    job = await done(repo, count=4)
    assert await repo.favourite_indexes(VIEWER, job.id) == set()
    await repo.toggle_favourite(VIEWER, job.id, 1)
    await repo.toggle_favourite(VIEWER, job.id, 3)
    await repo.toggle_favourite(11, job.id, 0)
    assert await repo.favourite_indexes(VIEWER, job.id) == {1, 3}


def test_the_gallery_finds_pictures_by_hash_from_an_index() -> None:
    assert any("CREATE INDEX images_sha256 ON images (sha256)" in sql
               for _, name, sql in migrations() if "gallery" in name)


# ---- on the benchmark's data ------------------------------------------------------------------

BENCH_SCOPE = Scope(1001, 1001_000, frozenset({10011}))


@pytest.fixture
async def filled(repo: Repository) -> Repository:
    await _bench().fill(repo, 3000, seed=1)
    return repo


GALLERY: dict[str, Callable[[Repository], Awaitable[Any]]] = {
    "page 1": lambda repo: repo.gallery(BENCH_SCOPE, limit=49),
    "deep page": lambda repo: repo.gallery(BENCH_SCOPE, limit=49, offset=20 * 48),
    "search": lambda repo: repo.gallery(BENCH_SCOPE, search='"red fox" sno', limit=49),
    "member": lambda repo: repo.gallery(BENCH_SCOPE, user_id=1001_001, limit=49),
    "model and kind": lambda repo: repo.gallery(BENCH_SCOPE, model="sd15", kind="reroll"),
    "favourites": lambda repo: repo.gallery(BENCH_SCOPE, favourites_of=1001_000, limit=49),
    "in a DM": lambda repo: repo.gallery(Scope(None, 9000_000), limit=49),
    "pictures of a page": lambda repo: repo.images_of(["a", "b", "c"]),
    "picture by hash": lambda repo: repo.image_holders("0" * 64),
}


@pytest.mark.parametrize("name", GALLERY)
async def test_gallery_pages_come_from_indexes(filled: Repository, name: str) -> None:
    for _, plan in await _plans(filled, lambda: GALLERY[name](filled)):
        assert not TABLE_SCAN.search(plan), plan
        assert not TABLE_SCAN.sub("", plan).count("SCAN images"), plan
        assert "TEMP B-TREE" not in plan, plan  # newest first straight from the index
