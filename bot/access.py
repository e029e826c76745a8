"""Who may see and act on which jobs (SPEC §6 Visibility): in a server, the jobs of the channels
a member can view (and their own); DM jobs their user's. A job from an NSFW channel is posted
or built on only in NSFW channels, and public posts of old pictures need the member's send
permissions and count against a per-person limit."""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Any

import discord

from bot import render
from bot.replies import answer_error
from bot.visibility import visible_channels
from storage import ImageRecord, JobRecord, JobStatus, Scope

if TYPE_CHECKING:
    from bot.client import AtelierBot


def scope_of(interaction: discord.Interaction[Any]) -> Scope:
    """The jobs this interaction may see: in a server, those of the channels the member can
    view and their own; in DMs the user's own."""
    user = interaction.user
    if interaction.guild_id is None:
        return Scope(None, user.id)
    guild = interaction.guild
    channels = (visible_channels(guild, user)
                if guild is not None and isinstance(user, discord.Member) else frozenset())
    return Scope(interaction.guild_id, user.id, channels)


def nsfw_allowed(interaction: discord.Interaction[Any]) -> bool:
    """Whether the channel is marked NSFW (direct messages are not)."""
    is_nsfw = getattr(interaction.channel, "is_nsfw", None)
    return bool(is_nsfw()) if callable(is_nsfw) else False


def may_send_pictures(interaction: discord.Interaction[Any]) -> bool:
    """Whether the member could post a picture in this channel themselves (always in DMs)."""
    if interaction.guild_id is None:
        return True
    permissions = interaction.permissions
    if isinstance(interaction.channel, discord.Thread):
        return permissions.send_messages_in_threads and permissions.attach_files
    return permissions.send_messages and permissions.attach_files


class PostLimit:
    """How many public posts each person had in the last `window` seconds, kept in memory
    (a restart forgets them, which only ever allows more)."""

    SWEEP_AT = 1000  # people remembered before the idle ones are forgotten

    def __init__(self, per_window: int, window: float = 60.0) -> None:
        self.per_window = per_window
        self.window = window
        self._posts: dict[int, deque[float]] = {}

    def __len__(self) -> int:
        """How many people are remembered."""
        return len(self._posts)

    def take(self, user_id: int, now: float | None = None) -> bool:
        """Count one post by `user_id`, unless they already had `per_window` in the window;
        whether it may go out."""
        now = time.monotonic() if now is None else now
        since = now - self.window
        if len(self._posts) >= self.SWEEP_AT:
            self._posts = {user: posts for user, posts in self._posts.items()
                           if posts and posts[-1] > since}
        posts = self._posts.setdefault(user_id, deque())
        while posts and posts[0] <= since:
            posts.popleft()
        if len(posts) >= self.per_window:
            return False
        posts.append(now)
        return True


async def may_use_here(interaction: discord.Interaction[AtelierBot], job: JobRecord) -> bool:
    """Whether `job`'s pictures may be shown or built on in this channel: not those of a job
    from an NSFW channel outside NSFW channels. Otherwise tells the user why not."""
    if job.nsfw_allowed and not nsfw_allowed(interaction):
        await answer_error(interaction, render.nsfw_only_text(job.id))
        return False
    return True


async def may_post_here(interaction: discord.Interaction[AtelierBot], job: JobRecord) -> bool:
    """Whether `job`'s pictures may be posted again publicly here (`U<n>`, `/recall`, `Open…`):
    allowed in this channel, by a member who may post pictures in it, within their limit of
    public posts (which this post then counts against). Otherwise tells the user why not."""
    if not await may_use_here(interaction, job):
        return False
    if not may_send_pictures(interaction):
        await answer_error(interaction, render.CANNOT_POST)
        return False
    posts = interaction.client.public_posts
    if not posts.take(interaction.user.id):
        await answer_error(interaction, render.post_limit_text(posts.per_window))
        return False
    return True


def may_manage(interaction: discord.Interaction[Any], job: JobRecord) -> bool:
    """The author, or a member allowed to manage messages where the button was pressed."""
    if interaction.user.id == job.user_id:
        return True
    return interaction.guild_id is not None and interaction.permissions.manage_messages


async def visible_job(interaction: discord.Interaction[AtelierBot], job_id: str | None,
                      scope: Scope | None = None) -> JobRecord | None:
    """The job `job_id` if this interaction (or `scope`, computed from it when not given) may
    see it; otherwise answers the user and gives None. Foreign, unknown and hidden ids get the
    same answer."""
    scope = scope_of(interaction) if scope is None else scope
    job = None if job_id is None else await interaction.client.repo.job_in_scope(job_id, scope)
    if job is None:
        await answer_error(interaction, render.no_job_text(job_id or ""))
    return job


async def visible_image(interaction: discord.Interaction[AtelierBot], job_id: str | None,
                        index: int | None) -> tuple[JobRecord, ImageRecord] | None:
    """Image `index` (1-based) of a finished job this interaction may see, or None after
    telling the user why not."""
    job = await visible_job(interaction, job_id)
    if job is None:
        return None
    if job.status is not JobStatus.DONE:
        await answer_error(interaction, f"Job `{job.id}` has no images yet.")
        return None
    images = await interaction.client.repo.images(job.id)
    if index is None or not 1 <= index <= len(images):
        await answer_error(interaction, f"Job `{job.id}` has no image {index}.")
        return None
    return job, images[index - 1]


async def usable_image(interaction: discord.Interaction[AtelierBot], job_id: str | None,
                       index: int | None) -> tuple[JobRecord, ImageRecord] | None:
    """Image `index` of a job, as `visible_image`, that may also be built on in this channel
    (`may_use_here`): what a button that makes a job from a picture starts from."""
    found = await visible_image(interaction, job_id, index)
    if found is None or not await may_use_here(interaction, found[0]):
        return None
    return found
