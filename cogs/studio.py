"""Continuing from a result: `V<n>`, `🔄`, `Vary (Subtle)`, `Vary (Strong)`, `Upscale (2x)`,
and remix mode, which lets the user edit the prompt before any of them runs."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot.access import may_use_here, visible_image, visible_job
from bot.imaging import ImageSizeError, check_pixels
from bot.options import remix_text, resolve_remix
from bot.prompt import PromptError
from bot.replies import OUR_FAULT, answer_error
from storage import JobRecord, JobStatus

if TYPE_CHECKING:
    from bot.client import AtelierBot

Interaction = discord.Interaction["AtelierBot"]

log = logging.getLogger(__name__)


# The form holds the prompt with its parameters written out (and `--no` text in the negative),
# so more than the 1000 characters of a prompt; parsing still limits the prompt itself.
REMIX_FIELD_MAX = 4000


class RemixModal(discord.ui.Modal):
    """The prompt and parameters of the job about to run, to edit first."""

    prompt: discord.ui.TextInput[RemixModal] = discord.ui.TextInput(
        label="Prompt", custom_id="prompt", style=discord.TextStyle.paragraph,
        max_length=REMIX_FIELD_MAX)
    negative: discord.ui.TextInput[RemixModal] = discord.ui.TextInput(
        label="Negative prompt", custom_id="negative", style=discord.TextStyle.paragraph,
        required=False, max_length=REMIX_FIELD_MAX)

    def __init__(self, title: str, job: JobRecord, on_submit: Callable[[Interaction, str, str],
                                                                         Awaitable[None]]) -> None:
        super().__init__(title=title, timeout=15 * 60, custom_id="atelier:remix")
        self.prompt.default = remix_text(job)
        self.negative.default = job.negative
        self._on_submit = on_submit

    async def on_submit(self, interaction: Interaction) -> None:  # type: ignore[override]
        await self._on_submit(interaction, self.prompt.value, self.negative.value)

    async def on_error(self, interaction: Interaction,  # type: ignore[override]
                       error: Exception) -> None:
        log.error("a remix of %s failed", interaction.user, exc_info=error)
        await answer_error(interaction, OUR_FAULT)


class Studio(commands.Cog):
    def __init__(self, bot: AtelierBot) -> None:
        self.bot = bot
        bot.button_handlers.update({
            "v": self.on_variation,
            "r": self.on_reroll,
            "vs": self.on_vary_subtle,
            "vx": self.on_vary_strong,
            "up": self.on_upscale,
        })

    async def run(self, interaction: Interaction, job: JobRecord, title: str) -> None:
        """Start `job`, or with remix mode on, first let the user edit its prompt."""
        settings = await self.bot.repo.settings(interaction.user.id)
        if not settings.remix:
            await self.bot.jobs.submit(interaction, job)
            return

        async def submitted(modal_interaction: Interaction, text: str, negative: str) -> None:
            await self.bot.catalogue.refresh_loras()
            try:
                params = resolve_remix(text, negative, job, self.bot.catalogue,
                                       count=job.count, strength=job.strength)
            except PromptError as error:
                await answer_error(modal_interaction, f"❌ {error}")
                return
            await self.bot.jobs.submit(modal_interaction, self.bot.jobs.remixed(job, params))

        await interaction.response.send_modal(RemixModal(title, job, submitted))

    async def on_variation(self, interaction: Interaction, job_id: str, index: int | None) -> None:
        """`V<n>`: four variations of image n, as strong as `Vary (Strong)`."""
        await self.vary(interaction, job_id, index, self.bot.settings.vary_strong_strength,
                        f"Remix — V{index}")

    async def on_reroll(self, interaction: Interaction, job_id: str, index: int | None) -> None:
        """`🔄`: the same job again with fresh seeds."""
        parent = await visible_job(interaction, job_id)
        if parent is None:
            return
        if parent.status is not JobStatus.DONE:
            await answer_error(interaction, f"Job `{parent.id}` has not finished yet.")
            return
        if not await may_use_here(interaction, parent):
            return
        job = self.bot.jobs.derive(interaction, parent, "reroll", count=parent.count,
                                   init_image=parent.init_image, strength=parent.strength)
        await self.run(interaction, job, "Remix — reroll")

    async def vary(self, interaction: Interaction, job_id: str, index: int | None,
                   strength: float, title: str) -> None:
        """Four variations of image `index` (img2img from it at `strength`)."""
        found = await visible_image(interaction, job_id, index)
        if found is None:
            return
        parent, image = found
        if not await may_use_here(interaction, parent):
            return
        job = self.bot.jobs.derive(interaction, parent, "variation", count=4,
                                   index=image.index + 1, init_image=image.sha256,
                                   strength=strength)
        await self.run(interaction, job, title)

    async def on_vary_subtle(self, interaction: Interaction, job_id: str,
                             index: int | None) -> None:
        """`Vary (Subtle)`: four close variations of one picture."""
        await self.vary(interaction, job_id, index, self.bot.settings.vary_subtle_strength,
                        "Remix — Vary (Subtle)")

    async def on_vary_strong(self, interaction: Interaction, job_id: str,
                             index: int | None) -> None:
        """`Vary (Strong)`: four freer variations of one picture."""
        await self.vary(interaction, job_id, index, self.bot.settings.vary_strong_strength,
                        "Remix — Vary (Strong)")

    async def on_upscale(self, interaction: Interaction, job_id: str, index: int | None) -> None:
        """`Upscale (2x)`: the picture at twice the size, refined by a light img2img pass."""
        found = await visible_image(interaction, job_id, index)
        if found is None:
            return
        parent, image = found
        if not await may_use_here(interaction, parent):
            return
        try:
            check_pixels(image.width * 2, image.height * 2)
        except ImageSizeError as error:
            await answer_error(interaction, f"❌ Upscale (2x) is not possible: {error}")
            return
        job = self.bot.jobs.derive(interaction, parent, "upscale", count=1,
                                   index=image.index + 1, init_image=image.sha256,
                                   strength=self.bot.settings.upscale_strength, scale=2)
        await self.bot.jobs.submit(interaction, job)


async def setup(bot: AtelierBot) -> None:
    await bot.add_cog(Studio(bot))
