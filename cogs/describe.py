"""`/describe`: four numbered prompt suggestions for an uploaded picture (SPEC §3.2), from the
captioning model on the engine's worker; `1`–`4` start `/imagine` with a suggestion and the
picture's aspect, `🔄` asks for new suggestions."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.access import may_use_here, visible_job
from bot.jobs import JobRefused, Origin
from bot.jobs.making import described, described_again, new_job
from bot.options import ImagineOptions, resolve
from bot.prompt import PromptError
from bot.remix import start_or_remix
from bot.replies import answer_error, withdraw
from bot.ui import Action, Press
from bot.uploads import check_declared, fetch
from storage import JobKind, JobRecord, JobStatus

if TYPE_CHECKING:
    from bot.client import AtelierBot

Interaction = discord.Interaction["AtelierBot"]

log = logging.getLogger(__name__)

NOT_SET_UP = "/describe is not set up on this bot (SD_CAPTION_MODEL)"


def caption_model_name(source: str) -> str:
    """A short name for the captioning model, as a job records it."""
    return Path(source.rstrip("/")).name.lower() or "captioner"


class Describe(commands.Cog):
    ACTIONS = (Action.SUGGESTION, Action.DESCRIBE_AGAIN)

    def __init__(self, bot: AtelierBot) -> None:
        self.bot = bot
        bot.buttons.register({Action.SUGGESTION: self.on_suggestion,
                              Action.DESCRIBE_AGAIN: self.on_again})

    async def cog_unload(self) -> None:
        self.bot.buttons.unregister(*self.ACTIONS)

    @app_commands.command(name="describe")
    @app_commands.describe(image="The picture to describe (PNG, JPEG or WebP)")
    async def describe(self, interaction: Interaction, image: discord.Attachment) -> None:
        """Four prompt suggestions for a picture."""
        # 1. Check what needs no download
        source = self.bot.catalogue.adapters.caption_model
        if source is None:
            await answer_error(interaction, f"❌ {NOT_SET_UP}")
            return
        try:
            check_declared(image.filename, image.size, image.content_type)
        except PromptError as error:
            await answer_error(interaction, f"❌ {error}")
            return
        origin = Origin.of(interaction)
        model = caption_model_name(source)
        # 2. Acknowledge publicly
        acknowledged = await self.bot.jobs.acknowledge(
            interaction, described(origin, "0" * 64, 1, 1, model), "/describe")
        if acknowledged is None:
            return
        try:
            # 3. Fetch and store the picture, save the job
            png, width, height = await fetch(image, self.bot.settings.download_timeout)
            async with self.bot.housekeeping.upload(png) as sha256:
                job = await self.bot.policy.admit(replace(
                    described(origin, sha256, width, height, model),
                    message_id=acknowledged.placeholder))
        except (PromptError, JobRefused) as error:
            await withdraw(interaction, f"❌ {error}")
            return
        except Exception:
            with contextlib.suppress(discord.HTTPException):
                await interaction.delete_original_response()
            raise
        # 4. Caption it: the placeholder becomes the suggestions
        self.bot.jobs.start(job)

    async def _description(self, interaction: Interaction, press: Press) -> JobRecord | None:
        """The finished `/describe` a button belongs to, if this interaction may use it here."""
        job = await visible_job(interaction, press.job_id)
        if job is None:
            return None
        if job.kind is not JobKind.DESCRIBE or job.status is not JobStatus.DONE:
            await answer_error(interaction, f"Job `{job.id}` has no suggestions.")
            return None
        if not await may_use_here(interaction, job):
            return None
        return job

    async def on_suggestion(self, interaction: Interaction, press: Press) -> None:
        """`1`–`4`: `/imagine` suggestion n, at the described picture's aspect."""
        parent = await self._description(interaction, press)
        if parent is None:
            return
        suggestions = parent.suggestion_list
        number = press.index or 0
        if not 1 <= number <= len(suggestions):
            await answer_error(interaction, f"Job `{parent.id}` has no suggestion {number}.")
            return
        defaults = await self.bot.repo.settings(interaction.user.id)
        options = ImagineOptions(prompt=suggestions[number - 1],
                                 image_size=(parent.width, parent.height))
        try:
            await self.bot.catalogue.refresh_loras()
            params = resolve(options, defaults, self.bot.catalogue)
        except PromptError as error:
            await answer_error(interaction, f"❌ {error}")
            return
        job = replace(new_job(Origin.of(interaction), params), parent_job=parent.id,
                      parent_index=number)
        await start_or_remix(self.bot, interaction, job, f"Imagine suggestion {number}")

    async def on_again(self, interaction: Interaction, press: Press) -> None:
        """`🔄`: new suggestions for the same picture."""
        parent = await self._description(interaction, press)
        if parent is None:
            return
        if self.bot.catalogue.adapters.caption_model is None:
            await answer_error(interaction, f"❌ {NOT_SET_UP}")
            return
        await self.bot.jobs.accept(interaction, described_again(Origin.of(interaction), parent))


async def setup(bot: AtelierBot) -> None:
    await bot.add_cog(Describe(bot))
