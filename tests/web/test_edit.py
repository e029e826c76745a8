"""`Edit` in the gallery (SPEC §8, the web's Vary (Region)) over HTTP: a member paints a mask over
a picture and submits it with a prompt; a `region` job runs through the same path as Discord's
(limits, queue, the keep rule of SPEC §3.1), its result is posted in the job's channel mentioning
them, and the gallery shows it. And every way it is refused."""

from __future__ import annotations

import io
import json
import re
import time
from typing import Any

import aiohttp
import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from storage import JobRecord, new_job_id
from tests.double import Channel, Message, Perm
from tests.e2e.conftest import Atelier, pixels, rows
from tests.web.conftest import Page, Visitor, made

SIZE = 128  # the tiny model's pictures


def png(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def painted(size: tuple[int, int] = (SIZE, SIZE)) -> Image.Image:
    """A mask as the page's canvas sends it: a brush stroke and a blob, white on black."""
    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    draw.line([(20, 30), (60, 40), (70, 75)], fill=255, width=14, joint="curve")
    draw.ellipse((80, 80, 112, 104), fill=255)
    return mask


def parent_picture(gallery: Atelier, job_id: str) -> np.ndarray:
    (row,) = rows(gallery, "SELECT path FROM images WHERE job_id = ? AND idx = 0", job_id)
    return pixels((gallery.settings.images_dir / row["path"]).read_bytes())


def answer_of(page: Page) -> dict[str, Any]:
    assert page.headers["Content-Type"].startswith("application/json"), (page.status, page.text)
    answered: dict[str, Any] = json.loads(page.body)
    return answered


async def submit(visitor: Visitor, job_id: str, number: int = 1, *, prompt: str = "a fountain",
                 mask: bytes | None = None, csrf: str | None = "page") -> Page:
    """`Submit` on the edit page of picture `number` of `job_id`, as its script sends it."""
    form = aiohttp.FormData()
    if csrf == "page":
        page = await visitor.get(f"/jobs/{job_id}/edit/{number}")
        csrf = page.csrf() if page.status == 200 else (await visitor.get("/")).csrf()
    if csrf is not None:
        form.add_field("csrf", csrf)
    form.add_field("prompt", prompt)
    if mask is not None:
        form.add_field("mask", mask, filename="mask.png", content_type="image/png")
    return await visitor.request("POST", f"/jobs/{job_id}/edit/{number}", data=form)


async def result_in(gallery: Atelier, channel: Channel, job_id: str) -> Message:
    """The message in `channel` that shows job `job_id`'s pictures."""
    def shown() -> Message | None:
        return next((message for message in gallery.double.channel_messages(channel)
                     if f"job `{job_id}`" in message.content and message.attachments), None)

    found: Message = await gallery.double.wait_for(shown, 60, description=f"job {job_id}")
    return found


def cells(result: Message) -> list[np.ndarray]:
    grid = pixels(result.attachment_bytes())
    return [grid[(i // 2) * SIZE:(i // 2 + 1) * SIZE, (i % 2) * SIZE:(i % 2 + 1) * SIZE]
            for i in range(4)]


def job_count(gallery: Atelier) -> int:
    return int(rows(gallery, "SELECT count(*) FROM jobs")[0][0])


async def test_a_member_paints_a_region_and_gets_it_redrawn(gallery: Atelier,
                                                           visitors: Any) -> None:
    double = gallery.double
    parent = await made(gallery, "a quiet garden --seed 31 --n 1", double.bob)
    original = parent_picture(gallery, parent)
    alice = await visitors(double.alice)

    # The page: the picture under a canvas of its size, the job's prompt to change.
    page = await alice.get(f"/jobs/{parent}/edit/1")
    assert page.status == 200
    assert f'<canvas width="{SIZE}" height="{SIZE}" data-mask' in page.text
    assert re.search(r'<textarea id="edit-prompt" name="prompt"[^>]*>a quiet garden</textarea>',
                     page.text)
    assert "posts them in #general" in page.text
    job_page = await alice.get(f"/jobs/{parent}")
    assert f'href="/jobs/{parent}/edit/1"' in job_page.text  # `Edit` under the picture

    mask = painted()
    sent = await submit(alice, parent, prompt="a quiet garden with a stone fountain",
                        mask=png(mask))
    assert sent.status == 201, sent.body
    edit = answer_of(sent)["job"]
    assert sent.location == f"/jobs/{edit}"

    # The job: a `region` of the picture, by alice, with the painted mask.
    (row,) = rows(gallery, "SELECT * FROM jobs WHERE id = ?", edit)
    assert (row["kind"], row["mode"], row["edit"], row["box"]) == (
        "region", "inpaint", "region painted", f"0,0,{SIZE},{SIZE}")
    assert (row["user_id"], row["parent_job"], row["parent_index"]) == (double.alice.id, parent, 1)
    assert (row["channel_id"], row["guild_id"]) == (double.channel.id, double.guild.id)
    assert row["prompt"] == "a quiet garden with a stone fountain"
    assert row["interaction_token"] is None
    assert row["mask_image"] is not None and gallery.bot is not None
    stored = gallery.bot.store.find(row["mask_image"])
    assert stored is not None
    assert np.array_equal(np.asarray(Image.open(stored).convert("L")), np.asarray(mask))

    # In Discord: a message of its own in #general, mentioning alice, with four pictures that
    # keep the picture beyond 8 px of the painted area and redraw what was painted.
    result = await result_in(gallery, double.channel, edit)
    assert result.content.startswith("**a quiet garden with a stone fountain** — "
                                     f"<@{double.alice.id}>")
    assert result.pinged_user_ids == [double.alice.id]
    assert not result.ephemeral and result.buttons  # the usual U/V/🔄
    redrawn = np.asarray(mask) > 0
    near = np.asarray(mask.filter(ImageFilter.MaxFilter(2 * 8 + 1))) > 0
    for cell in cells(result):
        assert np.abs(cell[~near] - original[~near]).max() <= 2
        assert np.abs(cell[redrawn] - original[redrawn]).mean() > 10
    placeholders = [m for m in double.channel_messages(double.channel)
                    if f"job `{edit}`" in m.content and m is not result]
    assert placeholders == []  # the "Queued" message it began with is gone

    # In the gallery: first in the grid, its page with its pictures and a link to the parent.
    assert (await alice.get(f"/g/{double.guild.id}")).job_ids()[0] == edit
    shown = await alice.get(f"/jobs/{edit}")
    assert len(re.findall(r'<img src="/images/[0-9a-f]{64}\.png"', shown.text)) == 4
    assert (f'Vary (Region) of a painted area of <a href="/jobs/{parent}#image-1">image 1 of '
            f"job {parent}</a>") in shown.text
    assert "region — Vary (Region) of a painted area" in shown.text
    status = answer_of(await alice.get(f"/jobs/{edit}/status"))
    assert status == {"status": "done", "position": None}


async def test_a_waiting_edit_says_so_and_is_followed(gallery: Atelier, visitors: Any) -> None:
    """Until its pictures are there, the new job's page says where it stands and follows it."""
    double = gallery.double
    parent = await made(gallery, "a tin robot --n 1", double.alice)
    alice = await visitors(double.alice)
    assert gallery.bot is not None
    waiting = new_job_id()
    saved = await gallery.bot.repo.insert_job(JobRecord(
        id=waiting, guild_id=double.guild.id, channel_id=double.channel.id,
        user_id=double.alice.id, kind="region", prompt="a tin robot waving", negative="",
        model="tiny", sampler="euler", width=SIZE, height=SIZE, steps=4, guidance=7.0,
        seed=1, count=4, created_at=time.time(), parent_job=parent, parent_index=1,
        edit="region painted"))
    assert saved is not None  # saved, never given to the engine: it stays queued
    page = await alice.get(f"/jobs/{waiting}")
    assert f'data-follow="/jobs/{waiting}/status"' in page.text
    assert "The pictures appear here when they are done, and in #general, mentioning Alice" \
        in page.text
    assert answer_of(await alice.get(f"/jobs/{waiting}/status"))["status"] == "queued"
    # Not finished: nothing to edit yet.
    assert (await alice.get(f"/jobs/{waiting}/edit/1")).status == 404


async def test_edits_are_refused_with_a_reason(gallery: Atelier, visitors: Any) -> None:
    double = gallery.double
    parent = await made(gallery, "a paper boat --n 1", double.bob)
    alice = await visitors(double.alice)
    good = png(painted())

    async def refused(status: int, error: str, **kwargs: Any) -> None:
        page = await submit(alice, parent, **kwargs)
        assert (page.status, answer_of(page)["error"]) == (status, error)

    await refused(403, "This page was open too long or came from elsewhere; reload it and try "
                       "again.", mask=good, csrf=None)
    await refused(403, "This page was open too long or came from elsewhere; reload it and try "
                       "again.", mask=good, csrf="guessed")
    await refused(400, "Paint the area to redraw over the picture first.")  # no mask
    await refused(400, "`mask.png` is all black: paint the area to redraw in white",
                  mask=png(Image.new("L", (SIZE, SIZE), 0)))
    await refused(400, "`mask.png` is not a readable PNG, JPEG or WebP image",
                  mask=b"GIF89a not really")
    await refused(400, f"The mask is 64×64; it must be the picture's size, {SIZE}×{SIZE}",
                  mask=png(painted((64, 64))))
    await refused(400, "Write a prompt: say what should appear in the painted area.",
                  mask=good, prompt="  ")
    await refused(400, "`--steps` must be a whole number from 1 to 150, got `999`", mask=good,
                  prompt="a paper boat --steps 999")
    assert job_count(gallery) == 1  # only the parent
    assert gallery.bot is not None and len(list(gallery.settings.images_dir.rglob("*.png"))) == 1

    # Signed out: off to sign in, nothing made.
    stranger = await visitors(None)
    page = await submit(stranger, parent, mask=good, csrf="x")
    assert page.status == 302 and page.location == "/login"
    assert job_count(gallery) == 1


async def test_only_those_who_see_a_job_may_edit_it(gallery: Atelier, visitors: Any) -> None:
    double = gallery.double
    parent = await made(gallery, "a lantern --n 1", double.bob)
    dm = double.dm_channel(double.alice)
    private = await made(gallery, "a diary --n 1", double.alice, channel=dm)
    eve, bob = await visitors(double.eve), await visitors(double.bob)
    nothing = await eve.get("/jobs/zzzzzzzz")
    good = png(painted())

    for visitor, job_id in ((eve, parent), (bob, private)):  # another server's; alice's DM
        for path in (f"/jobs/{job_id}/edit/1", f"/jobs/{job_id}/status"):
            page = await visitor.get(path)
            assert (page.status, page.text) == (404, nothing.text), path
        csrf = (await visitor.get("/")).csrf()
        page = await submit(visitor, job_id, mask=good, csrf=csrf)
        assert (page.status, page.text) == (404, nothing.text)
    page = await submit(bob, parent, 2, mask=good)  # no picture 2
    assert page.status == 404
    assert job_count(gallery) == 2

    # A DM job is its author's to edit: the result comes to them in the DM.
    alice = await visitors(double.alice)
    page = await alice.get(f"/jobs/{private}/edit/1")
    assert "sends them to you in Discord" in page.text
    sent = await submit(alice, private, mask=good, prompt="a diary with a pressed flower")
    assert sent.status == 201, sent.body
    result = await result_in(gallery, dm, answer_of(sent)["job"])
    assert result.pinged_user_ids == [double.alice.id]


async def test_the_persons_limits_and_the_servers_policy_apply(gallery: Atelier,
                                                                visitors: Any) -> None:
    double = gallery.double
    parent = await made(gallery, "a kite --n 1", double.bob)
    assert gallery.bot is not None
    # Alice has as many jobs waiting as she may (3): the edit waits for one of them.
    for _ in range(gallery.settings.max_queue_per_user):
        await gallery.bot.repo.insert_job(JobRecord(
            id=new_job_id(), guild_id=double.guild.id, channel_id=double.channel.id,
            user_id=double.alice.id, kind="imagine", prompt="waiting", negative="",
            model="tiny", sampler="euler", width=SIZE, height=SIZE, steps=4, guidance=7.0,
            seed=1, count=1, created_at=time.time()))
    alice = await visitors(double.alice)
    page = await submit(alice, parent, mask=png(painted()))
    assert (page.status, answer_of(page)["error"]) == (
        429, "You already have 3 jobs queued or running; wait for one to finish (at most 3 at "
             "a time)")
    assert rows(gallery, "SELECT count(*) FROM jobs WHERE kind = 'region'")[0][0] == 0
    assert rows(gallery, "SELECT count(*) FROM jobs WHERE mask_image IS NOT NULL")[0][0] == 0
    assert len(list(gallery.settings.images_dir.rglob("*.png"))) == 1  # no mask left behind


async def test_an_edit_needs_somewhere_to_be_posted(gallery: Atelier, visitors: Any) -> None:
    double = gallery.double
    art = await double.add_channel("art")
    bot = gallery.bot
    assert bot is not None
    await double.wait_for(lambda: bot.get_channel(art.id), description="#art in the cache")
    job = await made(gallery, "a clay pot --n 1", double.alice, channel=art)
    alice = await visitors(double.alice)
    good = png(painted())

    # The bot may no longer attach files in #art.
    double.set_permission_overwrite(art, double.bot_user, deny=Perm.ATTACH_FILES)
    await double.wait_for(lambda: not art_permissions(bot, art.id).attach_files,
                          description="the overwrite in the cache")
    refusal = ("Atelier cannot post pictures in #art: it lacks Attach Files there. A server "
               "admin can grant them (Edit Channel → Permissions).")
    page = await alice.get(f"/jobs/{job}/edit/1")
    assert page.status == 200 and refusal in page.text and "data-edit-form" not in page.text
    sent = await submit(alice, job, mask=good)
    assert (sent.status, answer_of(sent)["error"]) == (409, refusal)

    # #art is deleted: alice still sees her job, but an edit has nowhere to go.
    await double.delete_channel(art)
    await double.wait_for(lambda: bot.get_channel(art.id) is None, description="#art gone")
    sent = await submit(alice, job, mask=good)
    assert (sent.status, answer_of(sent)["error"]) == (
        409, "The channel this job was made in is gone, so there is nowhere to post an edit.")
    assert job_count(gallery) == 1


def art_permissions(bot: Any, channel_id: int) -> Any:
    channel = bot.get_channel(channel_id)
    return channel.permissions_for(channel.guild.me)


async def test_nsfw_pictures_are_edited_only_in_an_nsfw_channel(gallery: Atelier,
                                                                 visitors: Any) -> None:
    double = gallery.double
    job = await made(gallery, "a nude statue --n 1", double.alice, channel=double.nsfw_channel)
    alice = await visitors(double.alice)
    sent = await submit(alice, job, mask=png(painted()), prompt="a marble statue")
    assert sent.status == 201, sent.body
    edit = answer_of(sent)["job"]
    (row,) = rows(gallery, "SELECT channel_id, nsfw_allowed FROM jobs WHERE id = ?", edit)
    assert (row[0], row[1]) == (double.nsfw_channel.id, 1)
    await result_in(gallery, double.nsfw_channel, edit)


async def test_an_edit_follows_the_servers_allowed_channels(gallery: Atelier,
                                                            visitors: Any) -> None:
    double = gallery.double
    job = await made(gallery, "a copper kettle --n 1", double.alice)
    await gallery.restart(allowed_channels=(double.nsfw_channel.id,))
    alice = await visitors(double.alice)
    refusal = "Atelier works in #nsfw on this server."
    page = await alice.get(f"/jobs/{job}/edit/1")
    assert page.status == 200 and refusal in page.text and "data-edit-form" not in page.text
    sent = await submit(alice, job, mask=png(painted()), csrf=(await alice.get("/")).csrf())
    assert (sent.status, answer_of(sent)["error"]) == (409, refusal)
    assert job_count(gallery) == 1
