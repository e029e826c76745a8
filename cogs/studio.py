"""Continuing from a result: `V<n>`, `🔄`, `Vary (Subtle)`, `Vary (Strong)`, `Upscale (2x)` and a
draft's `Enhance`; with remix mode on, the prompt can be edited before the first four run."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot.access import may_use_here, usable_image, visible_job
from bot.jobs import JobRefused, Origin
from bot.jobs.making import enhanced, rerolled, upscaled, varied
from bot.prompt import PromptError
from bot.remix import start_or_remix
from bot.replies import answer_error
from bot.ui import Action, Press
from storage import JobStatus

if TYPE_CHECKING:
    from bot.client import AtelierBot

Interaction = discord.Interaction["AtelierBot"]


class Studio(commands.Cog):
    ACTIONS = (Action.VARIATION, Action.REROLL, Action.VARY_SUBTLE, Action.VARY_STRONG,
               Action.UPSCALE, Action.ENHANCE)

    def __init__(self, bot: AtelierBot) -> None:
        self.bot = bot
        bot.buttons.register(dict(zip(self.ACTIONS, (
            self.on_variation, self.on_reroll, self.on_vary_subtle, self.on_vary_strong,
            self.on_upscale, self.on_enhance), strict=True)))

    async def cog_unload(self) -> None:
        self.bot.buttons.unregister(*self.ACTIONS)

    async def on_variation(self, interaction: Interaction, press: Press) -> None:
        """`V<n>`: four variations of image n, as strong as `Vary (Strong)`."""
        await self.vary(interaction, press, self.bot.settings.vary_strong_strength,
                        f"Remix — V{press.index}")

    async def on_reroll(self, interaction: Interaction, press: Press) -> None:
        """`🔄`: the same job again with fresh seeds."""
        parent = await visible_job(interaction, press.job_id)
        if parent is None:
            return
        if parent.status is not JobStatus.DONE:
            await answer_error(interaction, f"Job `{parent.id}` has not finished yet.")
            return
        if not await may_use_here(interaction, parent):
            return
        await start_or_remix(self.bot, interaction, rerolled(Origin.of(interaction), parent),
                             "Remix — reroll")

    async def vary(self, interaction: Interaction, press: Press, strength: float,
                   title: str) -> None:
        """Four variations of image `press.index` (img2img from it at `strength`)."""
        found = await usable_image(interaction, press.job_id, press.index)
        if found is None:
            return
        parent, image = found
        family = self.bot.catalogue.family_of(parent.model)
        job = varied(Origin.of(interaction), parent, image, strength, family)
        await start_or_remix(self.bot, interaction, job, title)

    async def on_vary_subtle(self, interaction: Interaction, press: Press) -> None:
        """`Vary (Subtle)`: four close variations of one picture."""
        await self.vary(interaction, press, self.bot.settings.vary_subtle_strength,
                        "Remix — Vary (Subtle)")

    async def on_vary_strong(self, interaction: Interaction, press: Press) -> None:
        """`Vary (Strong)`: four freer variations of one picture."""
        await self.vary(interaction, press, self.bot.settings.vary_strong_strength,
                        "Remix — Vary (Strong)")

    async def on_upscale(self, interaction: Interaction, press: Press) -> None:
        """`Upscale (2x)`: the picture at twice the size, refined by a light img2img pass."""
        found = await usable_image(interaction, press.job_id, press.index)
        if found is None:
            return
        parent, image = found
        try:
            job = upscaled(Origin.of(interaction), parent, image,
                           self.bot.settings.upscale_strength)
        except JobRefused as error:
            await answer_error(interaction, f"❌ {error}")
            return
        await self.bot.jobs.accept(interaction, job)

    async def on_enhance(self, interaction: Interaction, press: Press) -> None:
        """`Enhance`: a draft's picture at full quality, from the same seed."""
        found = await usable_image(interaction, press.job_id, press.index)
        if found is None:
            return
        parent, image = found
        try:
            if parent.draft is None:
                raise JobRefused("Only the pictures of a `--draft` job can be enhanced")
            full = self.bot.catalogue.get(parent.draft)
            job = enhanced(Origin.of(interaction), parent, image, full,
                           self.bot.settings.enhance_strength)
        except PromptError:
            await answer_error(interaction, f"❌ The model this draft stands in for, "
                                            f"`{parent.draft}`, is no longer on this bot")
            return
        except JobRefused as error:
            await answer_error(interaction, f"❌ {error}")
            return
        await self.bot.jobs.accept(interaction, job)


async def setup(bot: AtelierBot) -> None:
    await bot.add_cog(Studio(bot))
