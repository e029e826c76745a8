"""May this job start? The server's policy (channels, blocked words), the bot's own permissions
where it would post, and each user's limits (jobs queued, jobs a minute)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import discord

from bot.blocked import blocked_word
from bot.permissions import NEEDED, labels
from storage import JobRecord, Repository

if TYPE_CHECKING:
    from bot.config import Settings


GRANT = "A server admin can grant them (Edit Channel → Permissions)."


class JobRefused(Exception):
    """A job may not be started; the message says why, for its author."""


class QueueFull(JobRefused):
    """The user already has as many jobs waiting as they may."""


class JobPolicy:
    def __init__(self, settings: Settings, repo: Repository) -> None:
        self.settings = settings
        self.repo = repo

    def channel_refusal(self, interaction: discord.Interaction[Any]) -> str | None:
        """Why Atelier does not answer in this channel (`ALLOWED_CHANNELS`), or None."""
        if interaction.guild_id is None:
            return None
        return self._not_allowed(interaction.channel_id,
                                 getattr(interaction.channel, "parent_id", None),
                                 lambda channel_id: f"<#{channel_id}>")

    def _not_allowed(self, channel_id: int | None, parent_id: int | None,
                     name: Callable[[int], str | None]) -> str | None:
        allowed = self.settings.allowed_channels
        if not allowed or {channel_id, parent_id} & set(allowed):
            return None
        names = [named for channel_id in allowed if (named := name(channel_id)) is not None]
        return f"Atelier works in {', '.join(names) or 'other channels'} on this server."

    @staticmethod
    def permission_refusal(interaction: discord.Interaction[Any]) -> str | None:
        """Why the bot could not post a picture in this channel (it lacks permissions), or None.

        A job outlives its interaction's 15 minutes when the queue is long or the bot restarts,
        and is then posted in the channel: nothing is queued that could not be delivered."""
        if interaction.guild_id is None:
            return None
        missing = _missing(interaction.app_permissions)
        if missing is None:
            return None
        return (f"Atelier cannot post pictures here: it lacks {missing} in this channel. "
                f"{GRANT}")

    def refusal_here(self, interaction: discord.Interaction[Any]) -> str | None:
        """Why no picture may be posted from `interaction` here, or None."""
        return self.channel_refusal(interaction) or self.permission_refusal(interaction)

    def refusal_in(self, channel: discord.abc.GuildChannel | discord.Thread) -> str | None:
        """Why a job asked for outside Discord (the gallery's `Edit`), which is posted in
        `channel` as a message of its own, may not run there, or None: the same rules as
        `refusal_here`, from the bot's cache instead of an interaction."""
        guild = channel.guild

        def name(channel_id: int) -> str | None:
            found = guild.get_channel_or_thread(channel_id)
            return f"#{found.name}" if found is not None else None  # deleted, or elsewhere

        refusal = self._not_allowed(channel.id, getattr(channel, "parent_id", None), name)
        if refusal is not None:
            return refusal
        missing = _missing(channel.permissions_for(guild.me))
        if missing is None:
            return None
        return f"Atelier cannot post pictures in #{channel.name}: it lacks {missing} there. {GRANT}"

    async def check(self, job: JobRecord) -> None:
        """Refuse `job` now if `admit` would, for a command that acknowledges before it has
        all its job needs (a picture to fetch): no file is fetched or stored for a job that
        cannot run. `admit` checks again as it saves."""
        self._check_words(job)
        limit = self.settings.max_queue_per_user
        active = await self.repo.active_job_count(job.user_id)
        if active >= limit:
            raise _queue_full(active, limit)
        rate = self.settings.rate_limit_per_minute
        if rate and await self.repo.recent_job_count(job.user_id, job.created_at - 60) >= rate:
            raise _rate_limited(rate)

    async def admit(self, job: JobRecord) -> JobRecord:
        """Save a new job, enforcing the server's words and the user's limits in the same
        statement as the insert (quick commands cannot slip past them together)."""
        self._check_words(job)
        settings = self.settings
        saved = await self.repo.insert_job(job, settings.max_queue_per_user,
                                           settings.rate_limit_per_minute or None)
        if saved is not None:
            return saved
        active = await self.repo.active_job_count(job.user_id)
        if active >= settings.max_queue_per_user:
            raise _queue_full(active, settings.max_queue_per_user)
        raise _rate_limited(settings.rate_limit_per_minute)

    def _check_words(self, job: JobRecord) -> None:
        blocked = blocked_word(f"{job.prompt} {job.negative}", self.settings.blocked_words)
        if blocked is not None:
            raise JobRefused(f"The prompt contains a word this server does not allow (`{blocked}`)")


def _missing(permissions: discord.Permissions) -> str | None:
    """The needed permissions not among `permissions`, named as Discord's settings do."""
    missing = discord.Permissions(NEEDED.value & ~permissions.value)
    return ", ".join(labels(missing)) if missing.value else None


def _queue_full(active: int, limit: int) -> QueueFull:
    return QueueFull(f"You already have {active} job{'s' if active != 1 else ''} queued or "
                     f"running; wait for one to finish (at most {limit} at a time)")


def _rate_limited(limit: int) -> JobRefused:
    return JobRefused(f"You started {limit} job{'s' if limit != 1 else ''} in the last minute; "
                      f"wait a moment (at most {limit} a minute)")
