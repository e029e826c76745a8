"""Bad input of every kind is refused privately, names the problem, and leaves nothing behind."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from tests.e2e.conftest import (
    Atelier,
    finished,
    image_size,
    job_id_of,
    rows,
    stored_files,
    withdrawn,
)

pytestmark = pytest.mark.e2e


def png(width: int, height: int, colour: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def bomb(side: int = 50_000) -> bytes:
    """A tiny PNG whose header claims `side`×`side` pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


async def refused(atelier: Atelier, expected: str, **attachment: tuple[str, bytes, str]) -> None:
    """Refused at once, on what Discord says of the file (its declared size and type)."""
    handle = await atelier.double.slash("imagine", {"prompt": "a fox"}, user=atelier.double.alice,
                                        attachments=attachment)
    response = await handle.response()
    assert response.type == 4 and response.ephemeral
    assert expected in response.data["content"], response.data["content"]


async def refused_once_fetched(atelier: Atelier, expected: str,
                               **attachment: tuple[str, bytes, str]) -> None:
    """Refused once the file is fetched: the public placeholder is taken back."""
    handle = await atelier.double.slash("imagine", {"prompt": "a fox"}, user=atelier.double.alice,
                                        attachments=attachment)
    text = await withdrawn(atelier, handle)
    assert expected in text, text


async def test_uploads_that_are_not_usable_pictures(atelier: Atelier) -> None:
    gif = io.BytesIO()
    Image.new("RGB", (32, 32)).save(gif, format="GIF")
    await refused(atelier, "`notes.txt` is not an image",
                  image=("notes.txt", b"these are my notes", "text/plain"))
    await refused(atelier, "`anim.gif` is GIF; use a PNG, JPEG or WebP image",
                  image=("anim.gif", gif.getvalue(), "image/gif"))
    await refused(atelier, "at most 10 MiB",
                  image=("huge.png", b"\x89PNG" + b"\x00" * (10 * 1024 * 1024 + 1), "image/png"))
    await refused_once_fetched(atelier, "`notes.png` is not a readable PNG, JPEG or WebP image",
                               image=("notes.png", b"these are my notes", "image/png"))
    await refused_once_fetched(atelier, "`sneaky.png` is GIF; use a PNG, JPEG or WebP image",
                               image=("sneaky.png", gif.getvalue(), "image/png"))
    await refused_once_fetched(
        atelier, "`wide.png` is 5000×64; images may be at most 4096 px a side",
        image=("wide.png", png(5000, 64), "image/png"))
    await refused_once_fetched(
        atelier, "`bomb.png` decodes to too many pixels; images may be at most 4096",
        image=("bomb.png", bomb(), "image/png"))
    await refused_once_fetched(atelier, "The image is 500×100, wider than 4:1; crop it first",
                               image=("band.png", png(500, 100), "image/png"))
    truncated = png(64, 64)[:60]
    await refused_once_fetched(atelier, "`cut.png` is not a readable",
                               image=("cut.png", truncated, "image/png"))
    assert rows(atelier, "SELECT count(*) FROM jobs")[0][0] == 0
    assert [m for m in atelier.double.messages if not m.ephemeral and not m.deleted] == []
    assert stored_files(atelier) == []


async def test_an_upload_is_used_at_the_models_area_keeping_its_aspect(atelier: Atelier) -> None:
    handle = await atelier.double.slash(
        "imagine", {"prompt": "a fox", "strength": 0.6, "count": 1},
        user=atelier.double.alice, attachments={"image": ("start.png", png(600, 300), "image/png")})
    message = await finished(handle)
    assert image_size(message.attachment_bytes()) == (184, 88)  # 2:1 on the 128² area
    [job] = rows(atelier, "SELECT strength, init_image FROM jobs WHERE id = ?",
                 job_id_of(message))
    assert job["strength"] == 0.6 and job["init_image"]


async def test_crafted_button_ids_are_answered_and_never_acted_on(atelier: Atelier) -> None:
    message = await finished(await atelier.imagine("a red fox", count=1))
    job_id = job_id_of(message)
    # Ids that are not on the message (Discord sends the stored message, so discord.py finds
    # no such button), malformed ones, unknown actions: all get a private answer in time.
    for custom_id in ("atelier:u:zzzzzzzz:1", f"atelier:u:{job_id}:9", f"atelier:zap:{job_id}",
                      "atelier:" + "x" * 90):
        click = await atelier.double.click(message, custom_id, force=True)
        answer = await click.response(5)
        assert answer.ephemeral and "no longer works" in answer.data["content"], custom_id
        assert click.ack_seconds is not None and click.ack_seconds < 3
    assert rows(atelier, "SELECT count(*) FROM jobs")[0][0] == 1


async def test_a_button_whose_job_is_gone_says_so(atelier: Atelier) -> None:
    message = await finished(await atelier.imagine("a red fox", count=1))
    job_id = job_id_of(message)
    assert atelier.bot is not None
    await atelier.bot.repo.db.execute("UPDATE jobs SET guild_id = 1 WHERE id = ?", (job_id,))
    click = await atelier.double.click(message, message.buttons[0][0].custom_id or "")
    answer = await click.response()
    assert answer.ephemeral and answer.data["content"] == f"No job `{job_id}` in this server."


async def test_another_servers_member_sees_nothing_of_this_server(atelier: Atelier) -> None:
    double = atelier.double
    alices = await finished(await atelier.imagine("alice's fox", count=1))
    job_id = job_id_of(alices)
    recall = await double.slash("recall", {"job": job_id}, user=double.eve,
                                channel=double.other_channel)
    answer = await recall.response()
    assert answer.ephemeral and answer.data["content"] == f"No job `{job_id}` in this server."
    choices = await double.autocomplete("recall", {"job": "alice"}, focused="job", user=double.eve,
                                        channel=double.other_channel)
    assert choices == []
    info = await double.context_menu("Image info", alices, user=double.eve,
                                     channel=double.other_channel)
    answer = await info.response()
    assert answer.ephemeral and answer.data["content"] == f"No job `{job_id}` in this server."


async def test_direct_message_jobs_belong_to_their_user(atelier: Atelier) -> None:
    double = atelier.double
    mine = await finished(await double.slash(
        "imagine", {"prompt": "a private fox", "count": 1}, user=double.alice,
        channel=double.dm_channel(double.alice)))
    job_id = job_id_of(mine)
    [job] = rows(atelier, "SELECT guild_id FROM jobs WHERE id = ?", job_id)
    assert job["guild_id"] is None
    for user, channel in ((double.bob, double.channel), (double.alice, double.channel),
                          (double.bob, double.dm_channel(double.bob))):
        recall = await double.slash("recall", {"job": job_id}, user=user, channel=channel)
        answer = await recall.response()
        assert answer.data["content"] == f"No job `{job_id}` in this server.", (user, channel)
    again = await double.slash("recall", {"job": job_id}, user=double.alice,
                               channel=double.dm_channel(double.alice))
    assert not (await again.response()).ephemeral  # her own DM job is hers to recall


async def test_a_jpeg_cut_short_is_found_out_before_its_job_is_saved(atelier: Atelier) -> None:
    """Its header reads well; decoding it after the deferral finds the rest missing."""
    buffer = io.BytesIO()
    Image.effect_noise((256, 256), 60).convert("RGB").save(buffer, format="JPEG", quality=95)
    cut = buffer.getvalue()[: len(buffer.getvalue()) // 3]
    handle = await atelier.double.slash(
        "imagine", {"prompt": "a fox", "count": 1}, user=atelier.double.alice,
        attachments={"image": ("cut.jpg", cut, "image/jpeg")})
    assert await withdrawn(atelier, handle) == (
        "❌ `cut.jpg` is not a readable PNG, JPEG or WebP image")
    assert rows(atelier, "SELECT count(*) FROM jobs")[0][0] == 0
    assert stored_files(atelier) == []


async def test_prompts_needing_too_many_chunks_are_refused_before_any_job(
        atelier: Atelier) -> None:
    breaks = await (await atelier.imagine("BREAK " * 165 + "fox")).response()
    assert breaks.type == 4 and breaks.ephemeral
    assert breaks.data["content"] == (
        "❌ The prompt needs at least 166 chunks of 75 tokens; at most 8 are allowed (each "
        "`BREAK` starts a new chunk, and each `::` part has chunks of its own)")
    parts = await (await atelier.imagine("::1 ".join(["a fox BREAK a dog"] * 5))).response()
    assert parts.ephemeral and "at least 10 chunks" in parts.data["content"]
    negative = await (await atelier.imagine("a fox", negative="blurry BREAK " * 9)).response()
    assert negative.ephemeral and negative.data["content"] == (
        "❌ The negative prompt needs at least 9 chunks of 75 tokens; at most 8 are allowed "
        "(each `BREAK` starts a new chunk)")
    assert rows(atelier, "SELECT count(*) FROM jobs")[0][0] == 0
    assert [m for m in atelier.double.messages if not m.ephemeral] == []


async def test_the_engine_refuses_what_the_bot_could_not_count(atelier: Atelier) -> None:
    # The tiny model's vocabulary has one token per letter: 80 words of 10 letters are 800
    # tokens, 11 chunks, though a real CLIP vocabulary needs 2. Only the engine can tell.
    message = await finished(await atelier.imagine("lighthouse " * 80, count=1))
    job_id = job_id_of(message)
    assert message.content.split("\n")[1] == (
        "Failed — The prompt needs 11 chunks of 75 tokens; at most 8 are allowed (each `BREAK` "
        f"starts a new chunk, and each `::` part has chunks of its own) · job `{job_id}`")
    assert not message.attachments and not message.buttons
    [job] = rows(atelier, "SELECT status, error FROM jobs")
    assert job["status"] == "failed" and job["error"].startswith("The prompt needs 11 chunks")
    # the next job runs as usual
    assert (await finished(await atelier.imagine("a red fox", count=1))).attachments
