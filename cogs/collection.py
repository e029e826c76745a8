"""Keeping and removing pictures: `❤️` (favourites) and `🗑️` (delete the message)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot.access import may_manage, visible_image
from bot.replies import answer_error
from bot.ui import Action, Press

if TYPE_CHECKING:
    from bot.client import AtelierBot

Interaction = discord.Interaction["AtelierBot"]

log = logging.getLogger(__name__)

DELETE_FAILED = "❌ Discord did not delete the message; it is still there. Try again in a moment."


class Collection(commands.Cog):
    def __init__(self, bot: AtelierBot) -> None:
        self.bot = bot
        bot.buttons.register({Action.FAVOURITE: self.on_favourite,
                              Action.DELETE: self.on_delete})

    async def cog_unload(self) -> None:
        self.bot.buttons.unregister(Action.FAVOURITE, Action.DELETE)

    async def on_favourite(self, interaction: Interaction, press: Press) -> None:
        """`❤️`: add the picture to (or take it out of) your favourites."""
        found = await visible_image(interaction, press.job_id, press.index)
        if found is None:
            return
        job, image = found
        added = await self.bot.repo.toggle_favourite(interaction.user.id, job.id, image.index)
        number = image.index + 1
        text = (f"❤️ Image {number} of job `{job.id}` is in your favourites "
                "(`/history favourites:True`)." if added
                else f"Image {number} of job `{job.id}` is no longer a favourite.")
        await interaction.response.send_message(text, ephemeral=True)

    async def on_delete(self, interaction: Interaction, press: Press) -> None:
        """`🗑️`: delete this message (its author, or Manage Messages); history keeps the job,
        noting which picture's message was deleted."""
        found = await visible_image(interaction, press.job_id, press.index)
        if found is None:
            return
        job, image = found
        if not (may_manage(interaction, job) or posted_for(interaction)):
            await answer_error(interaction, "Only the author of this job can delete it.")
            return
        await interaction.response.defer()
        try:
            await interaction.delete_original_response()
        except discord.HTTPException as error:
            log.warning("could not delete message %s of job %s: %s %s",
                        interaction.message and interaction.message.id, job.id, error.status,
                        error.text)
            await answer_error(interaction, DELETE_FAILED)
            return
        # Only now, with the message gone: the job itself, its grid and its other pictures'
        # messages stay as they are.
        if interaction.message is not None:
            await self.bot.repo.record_deleted_message(interaction.message.id, job.id,
                                                       image.index, interaction.user.id)


def posted_for(interaction: Interaction) -> bool:
    """Whether the message was posted at this user's request (their `U<n>` press), so it is
    theirs to remove too."""
    metadata = interaction.message.interaction_metadata if interaction.message else None
    return metadata is not None and metadata.user.id == interaction.user.id


async def setup(bot: AtelierBot) -> None:
    await bot.add_cog(Collection(bot))
