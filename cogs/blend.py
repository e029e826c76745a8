"""`/blend`: a grid of four mixing 2–5 uploaded pictures (SPEC §3.2), drawn through the IP-Adapter
with the pictures as its only prompt; its result has the usual buttons."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import replace
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.jobs import JobRefused, Origin
from bot.jobs.making import new_job
from bot.options import BLEND_DIMENSIONS, resolve_blend
from bot.prompt import PromptError
from bot.replies import answer_error, withdraw
from bot.uploads import check_declared, fetch
from storage import JobKind

if TYPE_CHECKING:
    from bot.client import AtelierBot

Interaction = discord.Interaction["AtelierBot"]

log = logging.getLogger(__name__)


class Blend(commands.Cog):
    def __init__(self, bot: AtelierBot) -> None:
        self.bot = bot

    @app_commands.command(name="blend")
    @app_commands.describe(
        image1="First picture to mix (PNG, JPEG or WebP)",
        image2="Second picture to mix",
        image3="Third picture (optional)",
        image4="Fourth picture (optional)",
        image5="Fifth picture (optional)",
        dimensions="Shape of the result: portrait 2:3, square or landscape 3:2",
    )
    @app_commands.choices(dimensions=[
        app_commands.Choice(name=f"{name} ({aspect})" if name != "square" else name, value=name)
        for name, aspect in BLEND_DIMENSIONS.items()])
    async def blend(
        self,
        interaction: Interaction,
        image1: discord.Attachment,
        image2: discord.Attachment,
        image3: discord.Attachment | None = None,
        image4: discord.Attachment | None = None,
        image5: discord.Attachment | None = None,
        dimensions: str | None = None,
    ) -> None:
        """Mix 2–5 pictures into four new ones."""
        pictures = [p for p in (image1, image2, image3, image4, image5) if p is not None]
        # 1. Check what needs no download, and refuse now what the pictures cannot change
        try:
            defaults = await self.bot.repo.settings(interaction.user.id)
            params = resolve_blend(dimensions, len(pictures), defaults, self.bot.catalogue)
            for picture in pictures:
                check_declared(picture.filename, picture.size, picture.content_type)
        except PromptError as error:
            await answer_error(interaction, f"❌ {error}")
            return
        origin = Origin.of(interaction)
        # 2. Acknowledge publicly: fetching five pictures can outlast Discord's 3 s
        acknowledged = await self.bot.jobs.acknowledge(
            interaction, new_job(origin, params, kind=JobKind.BLEND), "/blend")
        if acknowledged is None:
            return
        try:
            # 3. Fetch and store the pictures, save the job; a refused job takes its files
            timeout = self.bot.settings.download_timeout
            fetched = [await fetch(picture, timeout) for picture in pictures]
            async with contextlib.AsyncExitStack() as stack:
                stored = [await stack.enter_async_context(self.bot.housekeeping.upload(png))
                          for png, _, _ in fetched]
                job = await self.bot.policy.admit(replace(
                    new_job(origin, params, references=tuple(stored), kind=JobKind.BLEND),
                    message_id=acknowledged.placeholder))
        except (PromptError, JobRefused) as error:
            await withdraw(interaction, f"❌ {error}")
            return
        except Exception:
            with contextlib.suppress(discord.HTTPException):
                await interaction.delete_original_response()
            raise
        # 4. Run it: the placeholder becomes the grid
        self.bot.jobs.start(job)


async def setup(bot: AtelierBot) -> None:
    await bot.add_cog(Blend(bot))
