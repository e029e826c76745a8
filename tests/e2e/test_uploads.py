"""Pictures uploaded to `/imagine`, end to end: checked before anything is fetched or stored,
fetched after a public deferral, stored as a plain sRGB PNG without metadata, and removed again
when their job is refused, fails or is cancelled; and the start-up sweep of the image store."""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bot.replies import OUR_FAULT
from bot.uploads import normalise
from tests.double import DiscordDouble, InteractionHandle, Member
from tests.e2e.conftest import (
    Atelier,
    finished,
    image_size,
    job_id_of,
    referenced_files,
    rows,
    running_atelier,
    settings_for,
    stored_files,
    withdrawn,
)
from tests.pictures import (
    GPS_IFD,
    SWAPPED_GAMMA,
    SWAPPED_PRIMARIES,
    encode,
    gps_exif,
    grey_16_bits,
    in_srgb,
    png_chunks,
    swapped_profile,
)

pytestmark = pytest.mark.e2e

AN_HOUR_AGO = 3600


def png(colour: tuple[int, int, int] = (200, 40, 40), size: tuple[int, int] = (64, 64)) -> bytes:
    return encode(Image.new("RGB", size, colour), "PNG")


async def upload(atelier: Atelier, filename: str, data: bytes, user: Member | None = None,
                 content_type: str = "image/png", **options: object) -> InteractionHandle:
    return await atelier.double.slash(
        "imagine", {"prompt": "a fox", "count": 1, "steps": 2, **options},
        user=user or atelier.double.alice,
        attachments={"image": (filename, data, content_type)})


def downloads(double: DiscordDouble) -> list[str]:
    return [r.path for r in double.requests if r.path.startswith("/attachments/")]


def stored_sha(data: bytes) -> str:
    """The SHA-256 under which an upload of `data` is stored (its normalised PNG)."""
    return hashlib.sha256(normalise(data)[0]).hexdigest()


async def cancel(atelier: Atelier, handle: InteractionHandle) -> None:
    message = await handle.original()
    await message.wait_until(lambda m: bool(m.buttons), 30)
    [job] = rows(atelier, "SELECT id FROM jobs WHERE message_id = ?", message.id)
    await atelier.double.click(message, f"atelier:c:{job['id']}")
    await message.wait_until(lambda m: m.content.endswith("\nCancelled"), 30)


# ---- checked first: a refused job fetches and stores nothing

async def test_an_upload_over_the_queue_limit_is_refused_before_it_is_fetched(
        discord_double: DiscordDouble, data_dir: Path) -> None:
    settings = settings_for(discord_double, data_dir, max_queue_per_user=1)
    async with running_atelier(discord_double, settings) as atelier:
        busy = await atelier.imagine("a slow one", steps=150, count=1)
        assert (await busy.response()).type == 5

        refused = await upload(atelier, "start.png", png())
        response = await refused.response()
        assert response.type == 4 and response.ephemeral
        assert response.data["content"] == (
            "❌ You already have 1 job queued or running; wait for one to finish "
            "(at most 1 at a time)")
        assert downloads(discord_double) == []
        await cancel(atelier, busy)
        assert stored_files(atelier) == []
        assert rows(atelier, "SELECT count(*) FROM jobs")[0][0] == 1


async def test_a_blocked_word_is_refused_before_the_upload_is_fetched(
        discord_double: DiscordDouble, data_dir: Path) -> None:
    settings = settings_for(discord_double, data_dir, blocked_words=("fox",))
    async with running_atelier(discord_double, settings) as atelier:
        response = await (await upload(atelier, "start.png", png())).response()
        assert response.type == 4 and response.ephemeral
        assert "does not allow (`fox`)" in response.data["content"]
        assert downloads(discord_double) == [] and stored_files(atelier) == []


async def test_a_job_refused_after_the_download_takes_its_file_back(
        discord_double: DiscordDouble, data_dir: Path) -> None:
    """Two uploads pass the first check together; the second to be saved is over the rate
    limit, is withdrawn, and its picture is removed again (the other one's stays)."""
    settings = settings_for(discord_double, data_dir, rate_limit_per_minute=1)
    async with running_atelier(discord_double, settings) as atelier:
        first, second = png((200, 40, 40)), png((40, 40, 200))
        held = discord_double.fail("GET", r"/attachments/.*/first\.png$", status=None,
                                   hold=True)
        try:
            late = await upload(atelier, "first.png", first)
            assert (await late.response()).type == 5  # past the first check, now fetching
            saved = await upload(atelier, "second.png", second)
            job = await finished(saved)
        finally:
            held.release()
        assert await withdrawn(atelier, late) == (
            "❌ You started 1 job in the last minute; wait a moment (at most 1 a minute)")
        [row] = rows(atelier, "SELECT id, init_image FROM jobs")
        assert row["id"] == job_id_of(job) and row["init_image"] == stored_sha(second)
        assert stored_files(atelier) == referenced_files(atelier)
        assert atelier.bot is not None
        assert atelier.bot.store.find(stored_sha(first)) is None


# ---- deferred while fetching: a slow or bad file takes the placeholder back

async def test_a_slow_download_takes_the_placeholder_back(discord_double: DiscordDouble,
                                                          data_dir: Path) -> None:
    settings = settings_for(discord_double, data_dir, download_timeout=0.5)
    async with running_atelier(discord_double, settings) as atelier:
        stalled = discord_double.fail("GET", r"/attachments/", status=None, hold=True)
        try:
            handle = await upload(atelier, "slow.png", png())
            text = await withdrawn(atelier, handle)
        finally:
            stalled.release()
        assert handle.ack_seconds is not None and handle.ack_seconds < 3
        assert text == "❌ `slow.png` took longer than 0.5 s to download; try again"
        assert stalled.hits == 1
        assert rows(atelier, "SELECT count(*) FROM jobs")[0][0] == 0
        assert stored_files(atelier) == []


async def test_a_failed_download_takes_the_placeholder_back(atelier: Atelier) -> None:
    atelier.double.fail("GET", r"/attachments/", status=404)
    text = await withdrawn(atelier, await upload(atelier, "gone.png", png()))
    assert text == "❌ Could not download `gone.png`; try again"
    assert stored_files(atelier) == []


async def test_a_full_disk_takes_the_placeholder_back_and_leaves_no_file(
        atelier: Atelier, monkeypatch: pytest.MonkeyPatch) -> None:
    class FullDisk(io.FileIO):
        def write(self, data: object) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fdopen", lambda fd, *args, **kwargs: FullDisk(fd, "wb"))
    text = await withdrawn(atelier, await upload(atelier, "start.png", png()))
    assert text == OUR_FAULT  # no path, no errno: just that it was our fault
    assert stored_files(atelier) == []  # not even a temporary file
    assert rows(atelier, "SELECT count(*) FROM jobs")[0][0] == 0


# ---- what is stored: upright sRGB pixels, 8 bits, nothing else

async def test_a_phone_photo_is_stored_upright_in_srgb_without_where_it_was_taken(
        atelier: Atelier) -> None:
    photo = Image.new("RGB", (48, 32), (200, 30, 10))
    photo.paste((20, 20, 20), (0, 0, 24, 32))  # the left half dark
    data = encode(photo, "JPEG", quality=100, subsampling=0, exif=gps_exif(orientation=6),
                  icc_profile=swapped_profile())
    assert Image.open(io.BytesIO(data)).getexif().get_ifd(GPS_IFD)
    message = await finished(await upload(atelier, "IMG_0001.jpg", data, strength=0.5,
                                          content_type="image/jpeg"))
    assert image_size(message.attachment_bytes()) == (104, 160)  # 2:3: upright, portrait
    [job] = rows(atelier, "SELECT init_image FROM jobs WHERE id = ?", job_id_of(message))
    assert atelier.bot is not None
    path = atelier.bot.store.find(job["init_image"])
    assert path is not None and path.suffix == ".png"
    stored = path.read_bytes()
    assert png_chunks(stored) == ["IHDR", "IDAT", "IEND"]  # no EXIF, GPS, ICC or text
    assert b"Phone" not in stored
    picture = Image.open(io.BytesIO(stored))
    assert (picture.mode, picture.size) == ("RGB", (32, 48))
    pixels = np.asarray(picture).astype(float)
    dark = in_srgb((20, 20, 20), SWAPPED_PRIMARIES, SWAPPED_GAMMA)
    assert np.abs(pixels[4, 16] - dark).max() <= 3  # the dark half is on top now
    expected = in_srgb((200, 30, 10), SWAPPED_PRIMARIES, SWAPPED_GAMMA)  # red meant green
    assert np.abs(pixels[40, 16] - expected).max() <= 4


async def test_a_16_bit_grey_scan_is_stored_grey_not_white(atelier: Atelier) -> None:
    scan = grey_16_bits([8000, 30000, 52000], height=24)
    message = await finished(await upload(atelier, "scan.png", encode(scan, "PNG")))
    [job] = rows(atelier, "SELECT init_image FROM jobs WHERE id = ?", job_id_of(message))
    assert atelier.bot is not None
    path = atelier.bot.store.find(job["init_image"])
    assert path is not None
    stored = np.asarray(Image.open(path)).astype(int)
    assert [list(stored[10, 8 * i + 4]) for i in range(3)] == [[31] * 3, [117] * 3, [202] * 3]


# ---- a job that ends without pictures gives its upload up

async def test_a_failed_job_removes_its_upload(atelier: Atelier,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    assert atelier.bot is not None and atelier.bot.executor.worker is not None
    worker = atelier.bot.executor.worker

    def broken(*args: object) -> None:
        raise RuntimeError("the GPU fell over")

    monkeypatch.setattr(worker, "_call", broken)
    message = await finished(await upload(atelier, "start.png", png()))
    assert "\nFailed — The image pipeline failed on this job" in message.content
    await atelier.double.wait_for(lambda: stored_files(atelier) == [], 10,
                                  description="the upload of the failed job to be removed")
    [job] = rows(atelier, "SELECT status, init_image FROM jobs")
    assert job["status"] == "failed" and job["init_image"] == stored_sha(png())


async def test_a_cancelled_job_removes_its_upload_unless_another_job_uses_it(
        atelier: Atelier) -> None:
    shared, alone = png((10, 160, 90)), png((90, 90, 250))
    await finished(await upload(atelier, "same.png", shared, user=atelier.double.bob))
    for data in (shared, alone):
        await cancel(atelier, await upload(atelier, "start.png", data, steps=150, count=4))
    assert atelier.bot is not None
    await atelier.bot.jobs.wait_idle()
    assert atelier.bot.store.find(stored_sha(shared)) is not None  # bob's job starts from it
    assert atelier.bot.store.find(stored_sha(alone)) is None
    assert stored_files(atelier) == referenced_files(atelier)


# ---- the start-up sweep

async def test_the_start_up_sweep_removes_files_nothing_refers_to(
        atelier: Atelier, caplog: pytest.LogCaptureFixture) -> None:
    message = await finished(await upload(atelier, "start.png", png(), count=2))
    history = await atelier.double.slash("history", {}, user=atelier.double.alice)
    await (await history.original()).wait_until(lambda m: not m.loading)
    await atelier.stop()

    kept = stored_files(atelier)
    assert len(kept) == 3  # the upload and the two pictures
    images = Path(atelier.settings.images_dir)
    thumbs = atelier.settings.thumbnails_dir
    kept_thumbs = sorted(thumbs.rglob("*.jpg"))
    assert len(kept_thumbs) == 1
    orphan_sha = hashlib.sha256(b"left by a crash").hexdigest()
    orphans = [
        images / orphan_sha[:2] / f"{orphan_sha}.png",  # stored, its job never saved
        images / orphan_sha[:2] / f"{orphan_sha}.jpg",  # an upload stored as it was sent
        kept[0].parent / ".tmp-k3f9x2ab",  # a write cut short
        thumbs / orphan_sha[:2] / f"{orphan_sha}-256.jpg",  # the thumbnail of a removed picture
    ]
    for path in orphans:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"left by a crash")
    for path in [*orphans, *kept, *kept_thumbs]:
        os.utime(path, (os.stat(path).st_atime, os.stat(path).st_mtime - AN_HOUR_AGO))

    with caplog.at_level(logging.INFO, logger="bot.housekeeping"):
        await atelier.start()
        await atelier.double.wait_for(lambda: not any(p.exists() for p in orphans), 30,
                                      description="the sweep")
        await atelier.double.wait_for(lambda: "start-up sweep" in caplog.text, 10)
    assert "start-up sweep: removed 4 files nothing refers to" in caplog.text
    assert stored_files(atelier) == kept == referenced_files(atelier)
    assert sorted(thumbs.rglob("*.jpg")) == kept_thumbs
    # and the job still works from its kept files
    assert job_id_of(message) in message.content
