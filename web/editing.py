"""`Edit` in the gallery (the web's Vary (Region), SPEC §8): a page to paint the area to redraw
over a picture and change the prompt, the route that turns what was painted into a `region` job,
and the small JSON status a waiting job's page follows until its pictures are there.

The job goes the way the Discord side's go (`JobRunner.accept_in_channel`): the same policy,
limits, queue and batching, the keep rule of SPEC §3.1. With no interaction behind it, it is
shown in its job's channel as messages of its own, the result mentioning the person who asked.
Who may edit a picture is whoever may see its job here."""

from __future__ import annotations

import asyncio
import io
import logging
from typing import TYPE_CHECKING, Any

import discord
from aiohttp import web
from PIL import Image

from bot import render
from bot.jobs import JobRefused, Origin, QueueFull
from bot.jobs.making import painted_region
from bot.prompt import PromptError
from bot.remix import REMIX_FIELD_MAX, rewritten
from bot.uploads import UploadError, normalise_mask
from storage import ImageRecord, JobRecord, JobStatus
from web.pages import NotFound, Pages
from web.signin import Unavailable, Viewer, csrf_ok

if TYPE_CHECKING:
    from web.server import Gallery

log = logging.getLogger(__name__)

MASK_FIELD = "mask"
MASK_NAME = "mask.png"  # what errors call the painted mask (the page sends it by this name)
STALE_FORM = "This page was open too long or came from elsewhere; reload it and try again."
CHANNEL_GONE = "The channel this job was made in is gone, so there is nowhere to post an edit."
NO_PROMPT = "Write a prompt: say what should appear in the painted area."
NO_MASK = "Paint the area to redraw over the picture first."

Channel = discord.abc.GuildChannel | discord.Thread


def mask_png(data: bytes, width: int, height: int) -> bytes:
    """What was painted, as the black and white PNG a job's mask is stored as (white =
    redraw); it must be the picture's size and paint something. Blocking."""
    png = normalise_mask(data, MASK_NAME)
    with Image.open(io.BytesIO(png)) as mask:
        size = mask.size
    if size != (width, height):
        raise UploadError(f"The mask is {size[0]}×{size[1]}; it must be the picture's size, "
                          f"{width}×{height}")
    return png


def is_nsfw(channel: Channel) -> bool:
    marked = getattr(channel, "is_nsfw", None)
    return bool(marked()) if callable(marked) else False


def answer(code: int, /, **values: Any) -> web.Response:
    return web.json_response(values, status=code, headers={"Cache-Control": "no-store"})


class Edits:
    """The routes of `Edit`, beside the gallery's pages (whose rules of who sees what they
    share)."""

    def __init__(self, pages: Pages) -> None:
        self.pages = pages
        self.gallery: Gallery = pages.gallery
        self.bot = pages.bot

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get(r"/jobs/{job}/edit/{number:\d{1,2}}", self.page)
        router.add_post(r"/jobs/{job}/edit/{number:\d{1,2}}", self.submit)
        router.add_get("/jobs/{job}/status", self.status)

    async def picture(self, viewer: Viewer,
                      request: web.Request) -> tuple[JobRecord, ImageRecord, int]:
        """The finished job's picture the path names (`/jobs/<id>/edit/<n>`), if `viewer` may
        see it; its number from 1."""
        job, _ = await self.pages.visible_job(viewer, request.match_info["job"])
        if job.status is not JobStatus.DONE:
            raise NotFound()
        images = await self.bot.repo.images(job.id)
        number = int(request.match_info["number"])
        if not 1 <= number <= len(images):
            raise NotFound()
        return job, images[number - 1], number

    async def where_posted(self, job: JobRecord) -> tuple[Channel | None, str | None]:
        """The channel an edit of `job` is posted in (None in direct messages) and why it may
        not be (None if it may): the channel must still be there, be NSFW if the job's was, and
        the bot must be allowed to post pictures in it."""
        if job.guild_id is None:
            return None, None
        guild = self.bot.get_guild(job.guild_id)
        if guild is None:
            return None, CHANNEL_GONE
        channel = guild.get_channel_or_thread(job.channel_id) or await self._fetched(job)
        if channel is None or isinstance(channel, discord.CategoryChannel) or (
                isinstance(channel, discord.Thread) and channel.parent is None):
            return None, CHANNEL_GONE
        if job.nsfw_allowed and not is_nsfw(channel):
            return channel, render.nsfw_only_text(job.id)
        return channel, self.bot.policy.refusal_in(channel)

    async def _fetched(self, job: JobRecord) -> Channel | None:
        """A channel missing from the bot's cache — an archived thread — from Discord; None
        when it is gone."""
        try:
            found = await self.bot.fetch_channel(job.channel_id)
        except (discord.NotFound, discord.Forbidden):
            return None
        except discord.HTTPException as error:
            log.warning("gallery: could not fetch channel %s: %s", job.channel_id, error)
            raise Unavailable() from None
        if isinstance(found, discord.abc.GuildChannel | discord.Thread):
            return found
        return None

    # ---- the page ---------------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.StreamResponse:
        """`GET /jobs/<job id>/edit/<n>`: picture n under a canvas to paint on, the prompt, and
        `Submit`."""
        viewer = await self.pages.viewer(request)
        job, image, number = await self.picture(viewer, request)
        channel, refusal = await self.where_posted(job)
        guild = self.bot.get_guild(job.guild_id) if job.guild_id is not None else None
        return self.gallery.render(
            "edit.html", viewer=viewer, job=job, image=image, number=number, guild=guild,
            where=f"/g/{job.guild_id or 'dm'}", channel=channel.name if channel else None,
            refusal=refusal, veiled=image.nsfw and not job.nsfw_allowed,
            prompt_max=REMIX_FIELD_MAX)

    # ---- submitting -------------------------------------------------------------------------

    async def submit(self, request: web.Request) -> web.StreamResponse:
        """`POST /jobs/<job id>/edit/<n>` (multipart: `csrf`, `prompt`, `mask`, a PNG white where
        painted): start the `region` job. Answers JSON for the page's script: 201 with the new
        job's id and page, or an error to show under the form."""
        viewer = await self.pages.viewer(request)
        form = await request.post()
        if not await csrf_ok(request, form):
            return answer(403, error=STALE_FORM)
        parent, image, number = await self.picture(viewer, request)
        channel, refusal = await self.where_posted(parent)
        if refusal is not None:
            return answer(409, error=refusal)

        # 1. What was written and painted
        prompt = form.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            return answer(400, error=NO_PROMPT)
        upload = form.get(MASK_FIELD)
        if not isinstance(upload, web.FileField):
            return answer(400, error=NO_MASK)
        try:
            mask = await asyncio.to_thread(
                lambda: mask_png(upload.file.read(), image.width, image.height))
        except UploadError as error:
            return answer(400, error=str(error))

        # 2. The job, as Vary (Region) would make it, for this person
        guild = self.bot.get_guild(parent.guild_id) if parent.guild_id is not None else None
        origin = Origin(guild_id=parent.guild_id, channel_id=parent.channel_id,
                        user_id=viewer.id,
                        nsfw_allowed=channel is not None and is_nsfw(channel),
                        application_id=self.bot.application_id, interaction_token=None,
                        attachment_limit=guild.filesize_limit if guild is not None else None)
        try:
            job = await rewritten(self.bot, painted_region(origin, parent, image), prompt,
                                  parent.negative)
        except PromptError as error:
            return answer(400, error=str(error))

        # 3. Saved under the person's limits and the server's policy, queued, posted
        try:
            job = await self.bot.jobs.accept_in_channel(job, channel, mask=mask)
        except JobRefused as error:
            return answer(429 if isinstance(error, QueueFull) else 409, error=str(error))
        log.info("gallery: %s edits image %d of job %s as job %s", viewer.id, number,
                 parent.id, job.id)
        url = f"/jobs/{job.id}"
        response = answer(201, job=job.id, url=url)
        response.headers["Location"] = url
        return response

    # ---- following a job ----------------------------------------------------------------------

    async def status(self, request: web.Request) -> web.StreamResponse:
        """`GET /jobs/<job id>/status`: `{"status": "queued", "position": 2}` — what a waiting
        job's page shows until its pictures are there."""
        viewer = await self.pages.viewer(request)
        job, _ = await self.pages.visible_job(viewer, request.match_info["job"])
        position = (self.bot.executor.position(job.id)
                    if job.status is JobStatus.QUEUED else None)
        return answer(200, status=str(job.status), position=position)
