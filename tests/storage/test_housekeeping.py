"""Housekeeping against a real SQLite file and image store: which files a row refers to, an
upload given back when its job is not saved, and the sweep."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bot.housekeeping import Housekeeping
from storage import ImageRecord, ImageStore, Repository
from tests.storage.factories import make_job

LONG_AGO = 1_000_000.0


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "images")


@pytest.fixture
def housekeeping(store: ImageStore, repo: Repository, tmp_path: Path) -> Housekeeping:
    return Housekeeping(store, repo, tmp_path / "thumbs")


def _files(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.is_file())


async def _done_job(repo: Repository, store: ImageStore, picture: bytes,
                    init_image: str | None = None) -> str:
    job = await repo.insert_job(make_job(init_image=init_image))
    assert job is not None
    stored = store.put(picture)
    await repo.complete_job(job.id, [ImageRecord(job.id, 0, 42, stored.path, stored.sha256,
                                                 128, 128, stored.size_bytes)])
    return job.id


async def test_files_in_use_are_pictures_and_starting_pictures(repo: Repository,
                                                               store: ImageStore) -> None:
    upload = store.put(b"an upload")
    job_id = await _done_job(repo, store, b"a picture", init_image=upload.sha256)
    picture = store.put(b"a picture")
    assert await repo.files_in_use() == {upload.sha256, picture.sha256}
    assert await repo.file_in_use(picture.sha256)
    assert await repo.file_in_use(upload.sha256)
    assert not await repo.file_in_use(upload.sha256, besides_job=job_id)  # only its own job
    assert await repo.file_in_use(picture.sha256, besides_job=job_id)  # a picture row is other
    assert not await repo.file_in_use("0" * 64)


async def test_control_pictures_maps_and_references_are_in_use(repo: Repository,
                                                               store: ImageStore) -> None:
    control, first, second, control_map = (store.put(data) for data in (
        b"a control picture", b"a reference", b"another", b"a canny map"))
    job = await repo.insert_job(make_job(
        control="canny", control_image=control.sha256, control_weight=1.0,
        reference_images=f"{first.sha256},{second.sha256}", image_weight=1.0))
    assert job is not None
    await repo.complete_job(job.id, [], control_map=control_map.sha256)
    kept = {control.sha256, first.sha256, second.sha256, control_map.sha256}
    assert await repo.files_in_use() == kept
    for sha256 in kept:
        assert await repo.file_in_use(sha256)
        assert not await repo.file_in_use(sha256, besides_job=job.id)
    saved = await repo.job(job.id)
    assert saved is not None and saved.control_map == control_map.sha256
    assert saved.references == [first.sha256, second.sha256]


async def test_recent_job_count(repo: Repository) -> None:
    for created_at in (100.0, 150.0, 200.0):
        await repo.insert_job(make_job(created_at=created_at))
    await repo.insert_job(make_job(created_at=190.0, user_id=11))
    assert await repo.recent_job_count(10, 140.0) == 2
    assert await repo.recent_job_count(10, 200.0) == 0


async def test_an_upload_whose_job_is_not_saved_goes_again(housekeeping: Housekeeping,
                                                           store: ImageStore) -> None:
    with pytest.raises(RuntimeError):
        async with housekeeping.upload(b"refused") as sha256:
            assert store.find(sha256) is not None
            raise RuntimeError("the job was refused")
    assert _files(store.root) == []


async def test_an_upload_used_by_a_saved_job_stays(housekeeping: Housekeeping,
                                                   repo: Repository, store: ImageStore) -> None:
    async with housekeeping.upload(b"shared") as sha256:
        await repo.insert_job(make_job(init_image=sha256))
    with pytest.raises(RuntimeError):
        async with housekeeping.upload(b"shared") as again:
            raise RuntimeError("the second job was refused")
    assert again == sha256 and store.find(sha256) is not None


async def test_an_upload_being_saved_is_not_released(housekeeping: Housekeeping,
                                                     store: ImageStore) -> None:
    async with housekeeping.upload(b"being saved") as sha256:
        assert not await housekeeping.release(sha256)  # another job, refused meanwhile
        assert store.find(sha256) is not None
    assert await housekeeping.release(sha256)
    assert store.find(sha256) is None


async def test_the_sweep_removes_what_no_row_refers_to(housekeeping: Housekeeping,
                                                       repo: Repository, store: ImageStore,
                                                       tmp_path: Path) -> None:
    await _done_job(repo, store, b"kept")
    kept = _files(store.root)
    orphan = store.put(b"an orphan")
    thumbnail = tmp_path / "thumbs" / orphan.sha256[:2] / f"{orphan.sha256}-256.jpg"
    thumbnail.parent.mkdir(parents=True)
    thumbnail.write_bytes(b"its thumbnail")
    for path in [*_files(store.root), thumbnail]:
        os.utime(path, (LONG_AGO, LONG_AGO))
    assert await housekeeping.sweep() == 2
    assert _files(store.root) == kept and not thumbnail.exists()


async def test_the_sweep_keeps_a_store_beside_an_empty_database(housekeeping: Housekeeping,
                                                                 store: ImageStore) -> None:
    store.put(b"a picture of a database since replaced")
    os.utime(_files(store.root)[0], (LONG_AGO, LONG_AGO))
    assert await housekeeping.sweep() == 0
    assert len(_files(store.root)) == 1
