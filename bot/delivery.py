"""Showing a job on Discord: one message edited from placeholder to progress to result.

While the interaction's token is valid (15 minutes) the message is the interaction's own response;
after that, or if the token is refused, the job is shown in a channel message that mentions its
author. Progress edits are coalesced to at most one every `PROGRESS_INTERVAL` seconds. Uploads that
fail on Discord's side or stall are tried again with backoff; pictures larger than the
interaction's upload limit are re-encoded to fit."""

from __future__ import annotations

import asyncio
import io
import logging
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import aiohttp
import discord

from bot.imaging import shrink_to
from storage import JobRecord

if TYPE_CHECKING:
    from bot.client import AtelierBot

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 2.0
TOKEN_LIFETIME = 15 * 60
TOKEN_MARGIN = 60  # leave time for an upload to finish before the token expires
DEFAULT_ATTACHMENT_LIMIT = 10 * 1024 * 1024  # Discord's smallest per-message upload limit
INVALID_WEBHOOK_TOKEN = 50027
UNKNOWN_MESSAGE = 10008
UNKNOWN_WEBHOOK = 10015
REQUEST_TOO_LARGE = 40005


@dataclass(frozen=True)
class Attachment:
    filename: str
    data: bytes

    def file(self) -> discord.File:
        return discord.File(io.BytesIO(self.data), filename=self.filename)


@dataclass(frozen=True)
class Render:
    """What the job's message should show; attachments replace the message's attachments."""

    content: str
    attachments: tuple[Attachment, ...] = ()
    view: discord.ui.View | None = None

    @property
    def size(self) -> int:
        return sum(len(attachment.data) for attachment in self.attachments)


async def fitted(attachment: Attachment, limit: int) -> Attachment:
    """`attachment`, re-encoded (WebP) if it is larger than `limit` bytes."""
    if len(attachment.data) <= limit:
        return attachment
    data, suffix = await asyncio.to_thread(shrink_to, attachment.data, limit)
    log.info("%s re-encoded from %d to %d bytes to fit %d", attachment.filename,
             len(attachment.data), len(data), limit)
    return Attachment(f"{attachment.filename.rsplit('.', 1)[0]}.{suffix}", data)


class Delivery:
    """The message that shows one job."""

    upload_timeout = 60.0  # seconds one attempt may take
    attempts = 4
    backoff = 1.0  # seconds before the second attempt, doubling after

    def __init__(self, bot: AtelierBot, job: JobRecord) -> None:
        self.bot = bot
        self.job = job
        self.message_id = job.message_id
        self.limit = job.attachment_limit or DEFAULT_ATTACHMENT_LIMIT
        self._token = job.interaction_token
        self._channel_message: discord.Message | None = None
        self._lock = asyncio.Lock()
        self._pending: Render | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._last_edit = 0.0
        self._finished = False

    @property
    def via_channel(self) -> bool:
        return self._token is None

    def _token_usable(self) -> bool:
        if self._token is None or self.job.application_id is None or self.message_id is None:
            return False
        return time.time() < self.job.created_at + TOKEN_LIFETIME - TOKEN_MARGIN

    def update(self, render: Render) -> None:
        """Show `render` soon; a newer update replaces one not yet shown."""
        if self._finished:
            return
        self._pending = render
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        # Loops, so that an update arriving during an edit is shown after it, not dropped.
        while self._pending is not None and not self._finished:
            delay = self._last_edit + PROGRESS_INTERVAL - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            async with self._lock:
                render, self._pending = self._pending, None
                if render is None or self._finished:
                    return
                try:
                    await asyncio.wait_for(self._show(render), self.upload_timeout)
                except (discord.HTTPException, aiohttp.ClientError, OSError,
                        TimeoutError) as error:
                    # Progress is best effort: the final edit tries again with the latest state.
                    log.warning("could not update job %s: %s", self.job.id, error)

    async def finish(self, render: Render) -> int | None:
        """Show the final state now, trying again on Discord's errors and stalls; returns the
        id of the message that shows it."""
        self._finished = True
        async with self._lock:
            render = await self._fit(render, self.limit)
            for attempt in range(1, self.attempts + 1):
                try:
                    return await asyncio.wait_for(self._show(render), self.upload_timeout)
                except discord.HTTPException as error:
                    if error.code == REQUEST_TOO_LARGE or error.status == 413:
                        render = await self._fit(render, render.size // 2)
                    elif error.status < 500 and error.status != 429:
                        raise
                    last: BaseException = error
                except (aiohttp.ClientError, OSError, TimeoutError) as error:
                    last = error
                if attempt < self.attempts:
                    delay = self.backoff * 2 ** (attempt - 1)
                    log.warning("showing job %s failed (%s); trying again in %.0f s",
                                self.job.id, last, delay)
                    await asyncio.sleep(delay)
            raise last

    async def _fit(self, render: Render, limit: int) -> Render:
        """Re-encode pictures (WebP at falling qualities, then smaller) until they fit `limit`."""
        if render.size <= limit or not render.attachments:
            return render
        share = limit // len(render.attachments)
        return replace(render, attachments=tuple(
            [await fitted(attachment, share) for attachment in render.attachments]))

    async def _show(self, render: Render) -> int | None:
        self._last_edit = time.monotonic()
        if self._token_usable():
            try:
                return await self._edit_response(render)
            except discord.HTTPException as error:
                if not _token_gone(error):
                    raise
                log.info("job %s: interaction token no longer valid; posting in the channel",
                         self.job.id)
        self._token = None
        return await self._show_in_channel(render)

    async def _edit_response(self, render: Render) -> int:
        assert self.job.application_id is not None and self._token is not None
        assert self.message_id is not None
        webhook = discord.Webhook.partial(self.job.application_id, self._token, client=self.bot)
        await webhook.edit_message(
            self.message_id,
            content=render.content,
            attachments=[a.file() for a in render.attachments],
            view=render.view,
            allowed_mentions=discord.AllowedMentions(users=[discord.Object(self.job.user_id)]),
        )
        return self.message_id

    async def _show_in_channel(self, render: Render) -> int:
        mentions = discord.AllowedMentions(users=[discord.Object(self.job.user_id)])
        if self._channel_message is not None:
            message = await self._channel_message.edit(
                content=render.content,
                attachments=[a.file() for a in render.attachments],
                view=render.view,
                allowed_mentions=mentions,
            )
        else:
            channel = self.bot.get_partial_messageable(self.job.channel_id,
                                                       guild_id=self.job.guild_id)
            message = await channel.send(
                content=render.content,
                files=[a.file() for a in render.attachments],
                view=render.view or discord.utils.MISSING,
                allowed_mentions=mentions,
            )
        self._channel_message = message
        return message.id


def _token_gone(error: discord.HTTPException) -> bool:
    return error.status == 401 or error.code in (INVALID_WEBHOOK_TOKEN, UNKNOWN_WEBHOOK,
                                                 UNKNOWN_MESSAGE)
