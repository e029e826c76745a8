"""Who may see and act on which jobs: a server's jobs are that server's, DM jobs their user's."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import discord

from bot import render
from bot.replies import answer_error
from storage import ImageRecord, JobRecord, JobStatus, Scope

if TYPE_CHECKING:
    from bot.client import AtelierBot


def scope_of(interaction: discord.Interaction[Any]) -> Scope:
    """The jobs this interaction may see: its server's, or in DMs the user's own."""
    return Scope(interaction.guild_id, interaction.user.id)


def nsfw_allowed(interaction: discord.Interaction[Any]) -> bool:
    """Whether the channel is marked NSFW (direct messages are not)."""
    is_nsfw = getattr(interaction.channel, "is_nsfw", None)
    return bool(is_nsfw()) if callable(is_nsfw) else False


def may_manage(interaction: discord.Interaction[Any], job: JobRecord) -> bool:
    """The author, or a member allowed to manage messages where the button was pressed."""
    if interaction.user.id == job.user_id:
        return True
    return interaction.guild_id is not None and interaction.permissions.manage_messages


async def visible_job(interaction: discord.Interaction[AtelierBot],
                      job_id: str) -> JobRecord | None:
    """The job `job_id` if this interaction may see it; otherwise answers the user and gives
    None. Foreign and unknown ids get the same answer."""
    job = await interaction.client.repo.job_in_scope(job_id, scope_of(interaction))
    if job is None:
        await answer_error(interaction, render.no_job_text(job_id))
    return job


async def visible_image(interaction: discord.Interaction[AtelierBot], job_id: str,
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
