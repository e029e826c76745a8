"""Showing a job on Discord: one message edited from placeholder to progress to result.

While the interaction's token is valid (15 minutes) that message is the interaction's response.
After that (or when the token is refused) the job moves to a message of its own in the channel,
whose id is saved the moment it exists: later updates, and the next process after a restart,
edit it rather than post again. The message a new one replaces first loses its buttons (it says
"continued below"), so that no stale `Cancel` stays live even if the process stops right after.
Placeholders and progress mention nobody; only the final word (a result, a failure) mentions the
author, and in the channel it is a new message, because Discord notifies people of mentions in
new messages only. Each post carries a nonce made from the job and the message it replaces, so
a post repeated after a crash between posting and saving returns the first (Discord remembers
nonces for a few minutes).

Progress edits are coalesced to at most one every `PROGRESS_INTERVAL` seconds. Uploads that
fail on Discord's side or stall are tried again with backoff; pictures larger than the
interaction's upload limit are re-encoded to fit. When Discord refuses for good to show the job
in its channel (the channel is gone, the bot may not post there), `Undeliverable` says why."""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import aiohttp
import discord

from bot.imaging import shrink_to
from bot.render import moved_text, restarting_text
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
NONCE_LENGTH = 25  # the longest nonce Discord takes


@dataclass(frozen=True)
class Attachment:
    filename: str
    data: bytes

    def file(self) -> discord.File:
        return discord.File(io.BytesIO(self.data), filename=self.filename)


@dataclass(frozen=True)
class Render:
    """What the job's message should show; attachments replace the message's attachments.

    `notify`: this is the final word for the author (a result, a failure), so it mentions them;
    everything else mentions nobody."""

    content: str
    attachments: tuple[Attachment, ...] = ()
    view: discord.ui.View | None = None
    notify: bool = False

    @property
    def size(self) -> int:
        return sum(len(attachment.data) for attachment in self.attachments)


class Undeliverable(Exception):
    """Discord refuses for good to show the job in its channel; the message says why."""


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

    def __init__(self, bot: AtelierBot, job: JobRecord, resumed: bool = False) -> None:
        self.bot = bot
        self.job = job
        # Taken up after a restart: the stopped process may have posted the job's message in
        # the channel without living to save its id.
        self.resumed = resumed
        self.limit = job.attachment_limit or DEFAULT_ATTACHMENT_LIMIT
        self._token = job.interaction_token
        # A saved job with a token is shown by the interaction's response; without one, by a
        # message of its own in the channel (if it got that far).
        self._response_id = job.message_id if job.interaction_token is not None else None
        self._posted_id = job.message_id if job.interaction_token is None else None
        self._leftover: int | None = None  # a placeholder the posted result replaces
        self._lock = asyncio.Lock()
        self._pending: Render | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._last_edit = 0.0
        self._finished = False

    @property
    def message_id(self) -> int | None:
        """The message that shows the job now."""
        return self._posted_id if self._posted_id is not None else self._response_id

    def _token_usable(self) -> bool:
        if self._token is None or self.job.application_id is None or self._response_id is None:
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
                except (discord.HTTPException, aiohttp.ClientError, OSError, TimeoutError,
                        Undeliverable) as error:
                    # Progress is best effort: the final edit tries again with the latest state.
                    log.warning("could not update job %s: %s", self.job.id, error)

    async def finish(self, render: Render) -> int | None:
        """Show the job's final state now, trying again on Discord's errors and stalls, and
        record it delivered; returns the id of the message that shows it."""
        self._finished = True
        async with self._lock:
            message_id = await self._show_retrying(render)
            await self._delivered(message_id)
            return message_id

    async def pause(self, render: Render) -> None:
        """Show `render` now and stop updating: the job waits for the next process."""
        self._finished = True
        async with self._lock:
            await self._show_retrying(render)

    async def _delivered(self, message_id: int | None) -> None:
        # The placeholder goes before the delivery is recorded: a process stopped in between
        # shows the result again (its post's nonce returns the same message) and deletes it then.
        if self._leftover is not None and self._leftover != message_id:
            leftover, self._leftover = self._leftover, None
            try:
                await self._channel().get_partial_message(leftover).delete()
            except (discord.HTTPException, aiohttp.ClientError, OSError) as error:
                log.info("job %s: could not delete its placeholder %s: %s", self.job.id,
                         leftover, error)
        await self.bot.repo.set_delivered(self.job.id, message_id)

    async def _show_retrying(self, render: Render) -> int | None:
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
                log.info("job %s: interaction token no longer valid; showing it in the channel",
                         self.job.id)
        self._token = None
        return await self._show_in_channel(render)

    async def _edit_response(self, render: Render) -> int:
        assert self.job.application_id is not None and self._token is not None
        assert self._response_id is not None
        webhook = discord.Webhook.partial(self.job.application_id, self._token, client=self.bot)
        await webhook.edit_message(
            self._response_id,
            content=render.content,
            attachments=[a.file() for a in render.attachments],
            view=render.view,
            allowed_mentions=self._mentions(render),
        )
        return self._response_id

    async def _show_in_channel(self, render: Render) -> int:
        """Edit the job's own channel message, or post one: a first placeholder, or the final
        word (a new message, so that its mention notifies the author)."""
        posted = self._posted_id
        if posted is None and render.notify and self.resumed and self._response_id is not None:
            # A stopped process may have posted this job's placeholder without living to save
            # its id. Posting it again with its nonce returns it (or makes one), and the result
            # below replaces it; had that process posted the result itself, the result's post
            # below returns that one, and the placeholder goes all the same.
            log.info("job %s: looking for a placeholder a stopped process posted", self.job.id)
            await self._retire(self._response_id)
            claimed = await self._post(Render(restarting_text(self.job)),
                                       replaces=self._response_id)
            self._leftover = claimed.id
        if posted is not None and not render.notify:
            try:
                await self._edit_in_channel(posted, render)
                return posted
            except Undeliverable as refusal:
                if not isinstance(refusal.__cause__, discord.NotFound) \
                        or refusal.__cause__.code != UNKNOWN_MESSAGE:
                    raise
                log.info("job %s: its message %s was deleted; posting a new one", self.job.id,
                         posted)
        if self._response_id is not None and self._leftover is None:
            # Before the new message exists: should this process stop in between, the next
            # one does this again, and no stale `Cancel` is left behind either way.
            await self._retire(self._response_id)
        message = await self._post(render, replaces=self.message_id)
        if render.notify:
            if posted is not None:
                self._leftover = posted  # deleted once the result is recorded
        else:
            await self.bot.repo.set_channel_message(self.job.id, message.id)
        self._posted_id, self._response_id = message.id, None
        return message.id

    def _channel(self) -> discord.PartialMessageable:
        return self.bot.get_partial_messageable(self.job.channel_id, guild_id=self.job.guild_id)

    def _mentions(self, render: Render) -> discord.AllowedMentions:
        if render.notify:
            return discord.AllowedMentions(users=[discord.Object(self.job.user_id)])
        return discord.AllowedMentions.none()

    async def _post(self, render: Render, replaces: int | None) -> discord.Message:
        # The same job replacing the same message posts with the same nonce: Discord answers a
        # repeat with the message it already made.
        nonce = hashlib.sha256(f"{self.job.id}:{render.notify}:{replaces}".encode())
        try:
            return await self._channel().send(
                content=render.content,
                files=[a.file() for a in render.attachments],
                view=render.view or discord.utils.MISSING,
                allowed_mentions=self._mentions(render),
                nonce=nonce.hexdigest()[:NONCE_LENGTH],
            )
        except (discord.Forbidden, discord.NotFound) as error:
            raise Undeliverable(_refusal(error)) from error

    async def _edit_in_channel(self, message_id: int, render: Render) -> None:
        try:
            await self._channel().get_partial_message(message_id).edit(
                content=render.content,
                attachments=[a.file() for a in render.attachments],
                view=render.view,
                allowed_mentions=self._mentions(render),
            )
        except (discord.Forbidden, discord.NotFound) as error:
            raise Undeliverable(_refusal(error)) from error

    async def _retire(self, message_id: int) -> None:
        """Leave an earlier message of the job saying it continues below, without buttons."""
        try:
            await self._edit_in_channel(message_id, Render(moved_text(self.job)))
        except (Undeliverable, discord.HTTPException, aiohttp.ClientError, OSError,
                TimeoutError) as error:
            log.info("job %s: could not clear its earlier message %s: %s", self.job.id,
                     message_id, error)


def _token_gone(error: discord.HTTPException) -> bool:
    return error.status == 401 or error.code in (INVALID_WEBHOOK_TOKEN, UNKNOWN_WEBHOOK,
                                                 UNKNOWN_MESSAGE)


def _refusal(error: discord.HTTPException) -> str:
    """Discord's refusal in a few words: `404 Unknown Channel (10003)`."""
    return f"{error.status} {error.text or error.response.reason} ({error.code})"
