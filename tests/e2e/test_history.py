"""`/history` end to end: the private contact sheet and list, paging, `Open…`, search, filters
and server scoping."""

from __future__ import annotations

import asyncio
import errno
import io
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bot.imaging import encode_png
from storage import ImageRecord, JobRecord
from tests.double import Channel, Member, Message
from tests.e2e.conftest import Atelier, button, finished, image_size, job_id_of, pixels, rows
from tests.storage.factories import make_job

pytestmark = pytest.mark.e2e

CELL = 256
BADGE = 30  # the number's corner, left out when comparing a cell's colour


CHECKERBOARD = np.repeat(((np.indices((128, 128)) // 8).sum(axis=0) % 2 * 255)
                         .astype(np.uint8)[:, :, None], 3, axis=2)  # 8 px black and white


def colour(n: int) -> tuple[int, int, int]:
    """A distinct solid colour for job n."""
    return ((n * 67 + 30) % 256, (n * 131 + 60) % 256, (n * 29 + 90) % 256)


async def seed_job(atelier: Atelier, prompt: str, n: int = 0, *, user: Member | None = None,
                   dm: bool = False, other_guild: bool = False, count: int = 4,
                   age: float = 0.0, flagged: bool = False, checkered: bool = False,
                   channel: Channel | None = None, **fields: Any) -> JobRecord:
    """A finished job written straight to the database and the image store (much faster than
    generating it), made in #general (or `channel`): image 1 is a solid `colour(n)`, the
    others solid colours of their own; `checkered` makes image 1 a checkerboard, `flagged`
    also marks it as flagged by the safety checker. A job in an NSFW channel says so."""

    bot = atelier.bot
    assert bot is not None
    double = atelier.double
    user = user or (double.eve if other_guild else double.alice)
    channel = channel or (double.dm_channel(user) if dm
                          else double.other_channel if other_guild else double.channel)
    fields.setdefault("nsfw_allowed", channel.nsfw)
    job = await bot.repo.insert_job(make_job(
        guild_id=None if dm else channel.guild_id, channel_id=channel.id, user_id=user.id,
        prompt=prompt, count=count, created_at=time.time() - age, **fields))
    assert job is not None

    def store() -> list[ImageRecord]:
        records = []
        for index in range(count):
            fill = colour(n) if index == 0 else colour(1000 + 7 * n + index)
            picture = Image.new("RGB", (128, 128), fill)
            nsfw = flagged and index == 0
            if (flagged or checkered) and index == 0:
                picture = Image.fromarray(CHECKERBOARD)
            stored = bot.store.put(encode_png(picture))
            records.append(ImageRecord(job.id, index, job.seed + index, stored.path,
                                       stored.sha256, 128, 128, stored.size_bytes, nsfw))
        return records

    await bot.repo.complete_job(job.id, await asyncio.to_thread(store))
    return job


async def seed_jobs(atelier: Atelier, count: int, prompt: str = "picture", **fields: Any
                    ) -> list[JobRecord]:
    """`count` finished jobs, a minute apart, oldest first; job i has colour(i)."""
    return [await seed_job(atelier, f"{prompt} number {i}", i, age=(count - i) * 60, **fields)
            for i in range(count)]


async def history(atelier: Atelier, by: Member | None = None, channel: Any = None,
                  **options: Any) -> Message:
    """`by` runs `/history` with `options`; returns its private answer once filled in."""
    handle = await atelier.double.slash("history", options, user=by or atelier.double.alice,
                                        channel=channel)
    response = await handle.response()
    assert response.ephemeral
    message = await handle.original()
    await message.wait_until(lambda m: not m.loading)
    return message


def cell_colours(sheet: bytes) -> list[tuple[int, ...]]:
    """The mean colour of each cell of a contact sheet, row by row, the number's corner left
    out."""
    grid = pixels(sheet)
    found = []
    for top in range(0, grid.shape[0], CELL):
        for left in range(0, grid.shape[1], CELL):
            cell = grid[top + BADGE:top + CELL, left + BADGE:left + CELL]
            found.append(tuple(int(v) for v in cell.reshape(-1, 3).mean(axis=0).round()))
    return found


def assert_cells(sheet: bytes, expected: list[int]) -> None:
    """Cell k shows job `expected[k]`'s first picture (solid colour, up to JPEG loss)."""
    found = cell_colours(sheet)[:len(expected)]
    for k, (got, n) in enumerate(zip(found, expected, strict=True)):
        assert np.abs(np.array(got) - colour(n)).max() <= 6, (k + 1, got, colour(n))


def item_lines(message: Message) -> list[str]:
    return message.content.split("\n")[1:]


def page_buttons(message: Message) -> dict[str, bool]:
    """`◀` and `▶`, and whether each can be pressed."""
    return {b.text: not b.disabled for row in message.buttons for b in row}


def open_menu(message: Message) -> dict[str, Any]:
    [menu] = message.selects
    return menu


async def click_page(atelier: Atelier, message: Message, label: str,
                     user: Member | None = None) -> None:
    """Press `◀` or `▶` and wait until the message shows the new page."""
    before = len(message.history)
    handle = await atelier.double.click(message, button(message, label), user=user)
    assert (await handle.response()).type in (6, 7)
    await message.wait_until(lambda m: len(m.history) > before and not m.loading)


async def test_history_is_a_private_numbered_sheet_and_list(atelier: Atelier) -> None:
    double = atelier.double
    jobs = await seed_jobs(atelier, 12)
    bobs = await seed_job(atelier, "by bob", 50, user=double.bob)

    handle = await double.slash("history", {}, user=double.alice)
    response = await handle.response()
    assert response.ephemeral and handle.ack_seconds is not None and handle.ack_seconds < 3
    message = await handle.original()
    await message.wait_until(lambda m: not m.loading)
    assert message.ephemeral

    assert message.content.split("\n")[0] == "**History** — page 1 of 2 · 13 jobs"
    lines = item_lines(message)
    assert len(lines) == 9
    assert lines[0] == f"1. **by bob** — <@{double.bob.id}> · just now · `{bobs.id}`"
    for number, line in enumerate(lines[1:], start=2):
        job = jobs[13 - number]  # job i is 12 - i minutes old
        assert line == (f"{number}. **{job.prompt}** — <@{double.alice.id}> · "
                        f"{number - 1} min ago · `{job.id}`")

    [attachment] = message.attachments
    assert attachment.filename == "history.jpg"
    sheet = message.attachment_bytes()
    assert image_size(sheet) == (3 * CELL, 3 * CELL)
    assert_cells(sheet, [50, 11, 10, 9, 8, 7, 6, 5, 4])
    # each cell carries its number in the top-left corner: white on black
    corner = pixels(sheet)[:BADGE, :BADGE]
    assert (corner < 40).mean() > 0.5 and (corner > 200).any()

    assert page_buttons(message) == {"◀": False, "▶": True}
    menu = open_menu(message)
    assert menu["placeholder"] == "Open…"
    assert [option["value"] for option in menu["options"]] == [
        job_id_of_line(line) for line in lines]
    assert menu["options"][1]["label"] == "2. picture number 11"


def job_id_of_line(line: str) -> str:
    return line.rsplit("`", 2)[-2]


async def test_paging_edits_the_same_message(atelier: Atelier) -> None:
    jobs = await seed_jobs(atelier, 20)
    message = await history(atelier)
    first_id, shown = message.id, len(message.history)

    await click_page(atelier, message, "▶")
    assert message.id == first_id and len(message.history) > shown
    assert message.content.startswith("**History** — page 2 of 3 · 20 jobs")
    assert [job_id_of_line(line) for line in item_lines(message)] == [
        job.id for job in reversed(jobs[2:11])]
    assert page_buttons(message) == {"◀": True, "▶": True}

    await click_page(atelier, message, "▶")
    assert message.content.startswith("**History** — page 3 of 3")
    assert len(item_lines(message)) == 2
    sheet = message.attachment_bytes()
    assert image_size(sheet) == (2 * CELL, CELL)  # fewer cells, fewer columns
    assert_cells(sheet, [1, 0])
    assert page_buttons(message) == {"◀": True, "▶": False}
    assert len(open_menu(message)["options"]) == 2

    await click_page(atelier, message, "◀")
    await click_page(atelier, message, "◀")
    assert message.content.startswith("**History** — page 1 of 3")
    assert page_buttons(message) == {"◀": False, "▶": True}
    assert message.id == first_id
    assert len([m for m in atelier.double.messages if m.ephemeral]) == 1


async def test_buttons_keep_working_after_a_restart(atelier: Atelier) -> None:
    await seed_jobs(atelier, 10, "a red fox")
    message = await history(atelier, search="red fox")
    await atelier.restart()
    await click_page(atelier, message, "▶")
    assert message.content.startswith("**History** — page 2 of 2 · 10 jobs · matching `red fox`")
    assert_cells(message.attachment_bytes(), [0])


async def test_page_option_and_pages_past_the_end(atelier: Atelier) -> None:
    jobs = await seed_jobs(atelier, 11)
    message = await history(atelier, page=2)
    assert [job_id_of_line(line) for line in item_lines(message)] == [jobs[1].id, jobs[0].id]

    handle = await atelier.double.slash("history", {"page": 3})
    response = await handle.response()
    assert response.ephemeral and response.data["content"] == "There are only 2 pages."


async def test_open_recalls_the_job_publicly(atelier: Atelier) -> None:
    double = atelier.double
    jobs = await seed_jobs(atelier, 3)
    message = await history(atelier)
    before = list(message.history)

    handle = await double.select(message, "atelier:h:open", [jobs[1].id], user=double.alice)
    response = await handle.response()
    assert not response.ephemeral
    posted = await finished(handle)
    assert posted.id != message.id and not posted.ephemeral
    assert posted.content == (f"**{jobs[1].prompt}** — <@{double.alice.id}> · seeds 42–45 · "
                              f"job `{jobs[1].id}`")
    assert posted.button_labels == [["U1", "U2", "U3", "U4", "🔄"], ["V1", "V2", "V3", "V4"]]
    grid = pixels(posted.attachment_bytes())
    assert grid.shape == (256, 256, 3)
    assert (grid[0, 0] == colour(1)).all()
    assert message.history == before  # the private list stays as it was


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ('"red fox"', {"a red fox in the snow"}),
        ("red fox", {"a red fox in the snow", "fox, red"}),
        ("lig", {"lighthouse at dusk", "the Lighthouse keeper"}),
        ("fox", {"a red fox in the snow", "fox, red", "foxglove flowers"}),
    ],
)
async def test_search_phrases_and_prefixes(atelier: Atelier, query: str,
                                           expected: set[str]) -> None:
    for n, prompt in enumerate(["a red fox in the snow", "lighthouse at dusk", "fox, red",
                                "the Lighthouse keeper", "foxglove flowers", "a blue whale"]):
        await seed_job(atelier, prompt, n)
    await seed_job(atelier, "a red fox elsewhere", 9, other_guild=True)
    message = await history(atelier, search=query)
    shown = {line.split("**")[1] for line in item_lines(message)}
    assert shown == expected
    assert f"matching `{query.replace('`', '')}`" in message.content.split("\n")[0]


HOSTILE = ['"', "AND OR NOT", "NOT fox", "fox OR", "*", "fox*", "NEAR(fox red, 2)",
           "prompt:fox", "((fox", '"unbalanced', "'; DROP TABLE jobs; --", "🦊 fox", "`x`", "-"]


async def test_hostile_searches_never_fail(atelier: Atelier) -> None:
    await seed_job(atelier, "a fox and a hound", 1)
    for query in HOSTILE:
        handle = await atelier.double.slash("history", {"search": query})
        response = await handle.response()
        assert response.ephemeral, query
        message = await handle.original()
        await message.wait_until(lambda m: not m.loading)
        assert message.content.startswith(("**History**", "No finished jobs found")), (
            query, message.content)
    assert rows(atelier, "SELECT count(*) FROM jobs")[0][0] == 1


async def test_nothing_found_is_a_short_private_message(atelier: Atelier) -> None:
    handle = await atelier.double.slash("history", {})
    response = await handle.response()
    assert response.type == 4 and response.ephemeral
    assert response.data["content"] == "No finished jobs found."

    await seed_job(atelier, "a lighthouse", 1)
    handle = await atelier.double.slash("history", {"search": "zebra",
                                                    "user": atelier.double.bob})
    response = await handle.response()
    assert response.ephemeral and response.data["content"] == (
        f"No finished jobs found — by <@{atelier.double.bob.id}>, matching `zebra`.")
    assert [m for m in atelier.double.messages if not m.ephemeral] == []


async def test_user_filter_and_favourites(atelier: Atelier) -> None:
    double = atelier.double
    assert atelier.bot is not None
    mine = await seed_jobs(atelier, 4, "alice's")
    bobs = [await seed_job(atelier, f"bob's number {i}", 20 + i, user=double.bob)
            for i in range(3)]

    message = await history(atelier, user=double.bob)
    assert message.content.split("\n")[0] == (
        f"**History** — page 1 of 1 · 3 jobs · by <@{double.bob.id}>")
    assert [job_id_of_line(line) for line in item_lines(message)] == [
        job.id for job in reversed(bobs)]
    assert_cells(message.attachment_bytes(), [22, 21, 20])

    await atelier.bot.repo.toggle_favourite(double.alice.id, bobs[0].id, 2)
    await atelier.bot.repo.toggle_favourite(double.alice.id, mine[1].id, 0)
    await atelier.bot.repo.toggle_favourite(double.bob.id, mine[2].id, 0)
    message = await history(atelier, favourites=True)
    assert message.content.split("\n")[0].endswith("· 2 jobs · your ❤️ favourites")
    assert [job_id_of_line(line) for line in item_lines(message)] == [bobs[0].id, mine[1].id]

    handle = await double.slash("history", {"favourites": True, "user": double.bob},
                                user=double.bob)
    assert (await handle.response()).data["content"] == (
        f"No finished jobs found — by <@{double.bob.id}>, your ❤️ favourites.")


async def test_only_finished_jobs_and_deleted_ones_are_marked(atelier: Atelier) -> None:
    assert atelier.bot is not None
    done = await seed_job(atelier, "kept", 1, age=120)
    gone = await seed_job(atelier, "deleted later", 2, age=60)
    await atelier.bot.repo.record_deleted_message(1234, gone.id, 1, atelier.double.alice.id)
    queued = await atelier.bot.repo.insert_job(make_job(
        guild_id=atelier.double.guild.id, channel_id=atelier.double.channel.id,
        user_id=atelier.double.alice.id, prompt="still queued", created_at=time.time()))
    assert queued is not None

    message = await history(atelier)
    assert item_lines(message) == [
        f"1. **deleted later** — <@{atelier.double.alice.id}> · 1 min ago · `{gone.id}`"
        " (message of image 2 deleted)",
        f"2. **kept** — <@{atelier.double.alice.id}> · 2 min ago · `{done.id}`",
    ]


async def test_thumbnails_are_made_once(atelier: Atelier) -> None:
    jobs = await seed_jobs(atelier, 3)
    first = await history(atelier)
    thumbs = sorted((atelier.settings.data_dir / "thumbs").rglob("*.jpg"))
    assert len(thumbs) == 3
    made = {path: path.stat().st_mtime_ns for path in thumbs}

    # Without the full pictures the sheet is the same: it comes from the kept thumbnails.
    for job in jobs:
        [image] = rows(atelier, "SELECT path FROM images WHERE job_id = ? AND idx = 0", job.id)
        (Path(atelier.settings.images_dir) / image["path"]).unlink()
    second = await history(atelier)
    assert (np.abs(pixels(second.attachment_bytes()) - pixels(first.attachment_bytes()))
            .max() <= 2)
    assert {path: path.stat().st_mtime_ns for path in thumbs} == made


async def test_a_full_disk_costs_the_thumbnails_not_the_sheet(
        atelier: Atelier, monkeypatch: pytest.MonkeyPatch) -> None:
    await seed_jobs(atelier, 3)

    class FullDisk(io.FileIO):
        def write(self, data: object) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fdopen", lambda fd, *args, **kwargs: FullDisk(fd, "wb"))
    message = await history(atelier)
    assert_cells(message.attachment_bytes(), [2, 1, 0])
    thumbs = atelier.settings.thumbnails_dir
    assert [path for path in thumbs.rglob("*") if path.is_file()] == []  # nor temporary ones


async def test_a_real_job_is_listed_with_its_first_picture(atelier: Atelier) -> None:
    result = await finished(await atelier.imagine("a lighthouse at dusk --seed 7"))
    message = await history(atelier)
    [line] = item_lines(message)
    assert line.startswith(f"1. **a lighthouse at dusk** — <@{atelier.double.alice.id}> · ")
    assert line.endswith(f"`{job_id_of(result)}`")
    sheet = pixels(message.attachment_bytes())
    assert sheet.shape == (CELL, CELL, 3)
    # The cell, brought back to 128², is image 1 (the grid's top-left quarter), not another.
    small = sheet.reshape(128, 2, 128, 2, 3).mean(axis=(1, 3))
    grid = pixels(result.attachment_bytes())
    quarters = [grid[top:top + 128, left:left + 128] for top in (0, 128) for left in (0, 128)]
    distances = [np.abs(small - quarter)[BADGE // 2:, BADGE // 2:].mean() for quarter in quarters]
    assert distances[0] < 15 and distances[0] == min(distances), distances


async def test_other_servers_see_none_of_it(atelier: Atelier) -> None:
    double = atelier.double
    alices = await seed_jobs(atelier, 10)
    eves = await seed_job(atelier, "eve's own", 40, other_guild=True)

    message = await history(atelier, by=double.eve, channel=double.other_channel)
    assert message.content.split("\n")[0] == "**History** — page 1 of 1 · 1 job"
    assert [job_id_of_line(line) for line in item_lines(message)] == [eves.id]
    assert_cells(message.attachment_bytes(), [40])

    handle = await double.slash("history", {"user": double.alice}, user=double.eve,
                                channel=double.other_channel)
    assert (await handle.response()).data["content"] == (
        f"No finished jobs found — by <@{double.alice.id}>.")

    # A crafted `Open…` pick of alice's job and a forced `▶` are refused like unknown ids.
    handle = await double.select(message, "atelier:h:open", [alices[3].id], user=double.eve,
                                 force=True)
    response = await handle.response()
    assert response.ephemeral
    assert response.data["content"] == f"No job `{alices[3].id}` in this server."
    await click_page_forced(atelier, message, double.eve)
    assert [job_id_of_line(line) for line in item_lines(message)] == [eves.id]
    assert not [m for m in double.messages if m.channel_id == double.other_channel.id
                and not m.ephemeral]


async def click_page_forced(atelier: Atelier, message: Message, user: Member) -> None:
    """Press the disabled `▶` anyway, as a modified client could."""
    before = len(message.history)
    handle = await atelier.double.click(message, button(message, "▶"), user=user, force=True)
    await handle.response()
    await message.wait_until(lambda m: len(m.history) > before and not m.loading)


async def test_direct_messages_show_only_your_own(atelier: Atelier) -> None:
    double = atelier.double
    await seed_jobs(atelier, 2, "in the server")
    own = await seed_job(atelier, "alice in private", 30, dm=True)
    await seed_job(atelier, "bob in private", 31, dm=True, user=double.bob)
    message = await history(atelier, channel=double.dm_channel(double.alice))
    assert [job_id_of_line(line) for line in item_lines(message)] == [own.id]


async def test_flagged_pictures_are_veiled_outside_nsfw_channels(atelier: Atelier) -> None:
    await seed_job(atelier, "flagged", 1, flagged=True)

    def contrast(message: Message) -> float:
        return float(pixels(message.attachment_bytes())[BADGE:, BADGE:].std())

    veiled = await history(atelier)
    shown = await history(atelier, channel=atelier.double.nsfw_channel)
    assert contrast(shown) > 100  # the checkerboard itself
    assert contrast(veiled) < 30  # blurred beyond recognition
