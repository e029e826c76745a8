"""`/imagine` and the buttons of its results: `U<n>`, `V<n>`, `🔄` and `Cancel`."""

from __future__ import annotations

import asyncio
import io
import time
from dataclasses import replace
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import limits, render
from bot.access import may_manage, scope_of
from bot.client import answer_error
from bot.jobs import QueueFull
from bot.options import ImagineOptions, JobParameters, random_seed, resolve
from bot.prompt import PromptError
from bot.ui import single_image_view
from bot.uploads import read_attachment
from storage import JobRecord, JobStatus, new_job_id

if TYPE_CHECKING:
    from bot.client import AtelierBot

Interaction = discord.Interaction["AtelierBot"]

VARIATION_STRENGTH = 0.6  # `V<n>`: a strong variation, like Midjourney's


class Imagine(commands.Cog):
    def __init__(self, bot: AtelierBot) -> None:
        self.bot = bot
        bot.button_handlers.update({
            "u": self.on_upscale_pick,
            "v": self.on_variation,
            "r": self.on_reroll,
            "c": self.on_cancel,
        })

    # ---- /imagine ---------------------------------------------------------------------------

    @app_commands.command(name="imagine")
    @app_commands.describe(
        prompt="What to draw; Midjourney parameters like --ar 16:9 --seed 42 work at the end",
        negative="What to keep out of the picture",
        aspect="Aspect ratio (width:height)",
        count="How many images (1–4)",
        seed="Seed of the first image; image i uses seed + i",
        steps="Denoising steps (1–150)",
        guidance="How closely to follow the prompt (CFG scale, 0–30)",
        model="Which model to use",
        image="Start from this picture (PNG, JPEG or WebP)",
        strength="With an image: how far to move away from it (0.05–1.0)",
    )
    @app_commands.choices(
        aspect=[app_commands.Choice(name=a, value=a) for a in limits.ASPECT_CHOICES]
    )
    async def imagine(
        self,
        interaction: Interaction,
        prompt: app_commands.Range[str, 1, limits.PROMPT_MAX],
        negative: app_commands.Range[str, 1, limits.PROMPT_MAX] | None = None,
        aspect: str | None = None,
        count: app_commands.Range[int, limits.COUNT_MIN, limits.COUNT_MAX] | None = None,
        seed: app_commands.Range[int, limits.SEED_MIN, limits.SEED_MAX] | None = None,
        steps: app_commands.Range[int, limits.STEPS_MIN, limits.STEPS_MAX] | None = None,
        guidance: app_commands.Range[float, limits.GUIDANCE_MIN, limits.GUIDANCE_MAX] | None = None,
        model: str | None = None,
        image: discord.Attachment | None = None,
        strength: app_commands.Range[float, limits.STRENGTH_MIN, limits.STRENGTH_MAX] | None = None,
    ) -> None:
        """Create images from a text prompt."""
        options = ImagineOptions(
            prompt=prompt, negative=negative, aspect=aspect, count=count, seed=seed, steps=steps,
            guidance=guidance, model=model, strength=strength, has_image=image is not None,
        )
        try:
            defaults = await self.bot.repo.settings(interaction.user.id)
            init_sha = None
            if image is not None:
                png, width, height = await read_attachment(image)
                options = replace(options, image_size=(width, height))
                init_sha = (await asyncio.to_thread(self.bot.store.put, png)).sha256
            params = resolve(options, defaults, self.bot.catalogue)
        except PromptError as error:
            await answer_error(interaction, f"❌ {error}")
            return
        await self.start_job(interaction, self.new_job(interaction, params, init_sha))

    @imagine.autocomplete("model")
    async def model_autocomplete(self, interaction: Interaction,
                                 current: str) -> list[app_commands.Choice[str]]:
        current = current.lower()
        return [
            app_commands.Choice(name=f"{spec.name} ({spec.family.label})", value=spec.name)
            for spec in self.bot.catalogue
            if current in spec.name
        ][:25]

    # ---- jobs -------------------------------------------------------------------------------

    @staticmethod
    def origin(interaction: Interaction) -> dict[str, object]:
        """Who asked, where, and the token to answer them with."""
        return {
            "guild_id": interaction.guild_id,
            "channel_id": interaction.channel_id or 0,
            "user_id": interaction.user.id,
            "application_id": interaction.application_id,
            "interaction_token": interaction.token,
        }

    def new_job(self, interaction: Interaction, params: JobParameters,
                init_image: str | None) -> JobRecord:
        return JobRecord(
            id=new_job_id(),
            kind="imagine",
            prompt=params.prompt,
            negative=params.negative,
            model=params.model.name,
            sampler=params.sampler,
            width=params.width,
            height=params.height,
            steps=params.steps,
            guidance=params.guidance,
            seed=params.seed,
            count=params.count,
            created_at=time.time(),
            strength=params.strength,
            init_image=init_image,
            **self.origin(interaction),  # type: ignore[arg-type]
        )

    def derived(self, interaction: Interaction, parent: JobRecord, kind: str, *, count: int,
                index: int | None = None, init_image: str | None = None,
                strength: float | None = None, scale: int = 1) -> JobRecord:
        """A new job continuing from `parent`, always with fresh seeds."""
        return replace(
            parent,
            id=new_job_id(),
            kind=kind,
            parent_job=parent.id,
            parent_index=index,
            seed=random_seed(count),
            count=count,
            init_image=init_image,
            strength=strength,
            width=parent.width * scale,
            height=parent.height * scale,
            status=JobStatus.QUEUED,
            error=None,
            message_id=None,
            created_at=time.time(),
            started_at=None,
            finished_at=None,
            deleted_at=None,
            **self.origin(interaction),  # type: ignore[arg-type]
        )

    async def start_job(self, interaction: Interaction, job: JobRecord) -> None:
        """Save the job, acknowledge publicly, then run it: the placeholder becomes the result."""
        try:
            job = await self.bot.jobs.create(job)
        except QueueFull as error:
            await answer_error(interaction, f"❌ {error}")
            return
        try:
            response = await interaction.response.defer(thinking=True)
        except discord.HTTPException:
            # The interaction is gone; the job still runs and is posted in the channel.
            response = None
        if response is not None and response.message_id is not None:
            job = replace(job, message_id=response.message_id)
            await self.bot.repo.set_message(job.id, response.message_id)
        else:
            job = replace(job, interaction_token=None)
        self.bot.jobs.start(job)

    async def finished_job(self, interaction: Interaction, job_id: str) -> JobRecord | None:
        """The job behind a button, if this user may see it and it has images; else answers."""
        job = await self.bot.repo.job_in_scope(job_id, scope_of(interaction))
        if job is None:
            await answer_error(interaction, render.no_job_text(job_id))
            return None
        if job.status is not JobStatus.DONE:
            await answer_error(interaction, f"Job `{job.id}` has no images yet.")
            return None
        return job

    async def image_of(self, interaction: Interaction, job: JobRecord,
                       index: int | None) -> tuple[int, str] | None:
        """(index, sha256) of image `index` of `job`, or None after telling the user why."""
        images = await self.bot.repo.images(job.id)
        if index is None or not 1 <= index <= len(images):
            await answer_error(interaction, f"Job `{job.id}` has no image {index}.")
            return None
        return index, images[index - 1].sha256

    # ---- buttons ----------------------------------------------------------------------------

    async def on_upscale_pick(self, interaction: Interaction, job_id: str,
                              index: int | None) -> None:
        """`U<n>`: image n alone, full size, as a PNG carrying its parameters."""
        job = await self.finished_job(interaction, job_id)
        if job is None:
            return
        images = await self.bot.repo.images(job.id)
        if index is None or not 1 <= index <= len(images):
            await answer_error(interaction, f"Job `{job.id}` has no image {index}.")
            return
        data = await asyncio.to_thread(self.bot.store.read, images[index - 1].path)
        await interaction.response.send_message(
            render.single_image_text(job, index, interaction.user.id),
            file=discord.File(io.BytesIO(data), filename=f"atelier_{job.id}_{index}.png"),
            view=single_image_view(job.id, index),
            allowed_mentions=discord.AllowedMentions(users=[interaction.user]),
        )

    async def on_variation(self, interaction: Interaction, job_id: str,
                           index: int | None) -> None:
        """`V<n>`: four variations of image n."""
        job = await self.finished_job(interaction, job_id)
        if job is None:
            return
        found = await self.image_of(interaction, job, index)
        if found is None:
            return
        index, sha = found
        await self.start_job(interaction, self.derived(
            interaction, job, "variation", count=4, index=index, init_image=sha,
            strength=VARIATION_STRENGTH))

    async def on_reroll(self, interaction: Interaction, job_id: str, index: int | None) -> None:
        """`🔄`: the same job again with fresh seeds."""
        job = await self.finished_job(interaction, job_id)
        if job is None:
            return
        await self.start_job(interaction, self.derived(
            interaction, job, "reroll", count=job.count, init_image=job.init_image,
            strength=job.strength))

    async def on_cancel(self, interaction: Interaction, job_id: str, index: int | None) -> None:
        """`Cancel`: stop a queued or running job (its author, or Manage Messages)."""
        job = await self.bot.repo.job_in_scope(job_id, scope_of(interaction))
        if job is None:
            await answer_error(interaction, render.no_job_text(job_id))
            return
        if not may_manage(interaction, job):
            await answer_error(interaction, "Only the author of this job can cancel it.")
            return
        if job.status.finished:
            await answer_error(interaction, f"Job `{job.id}` has already finished.")
            return
        await interaction.response.defer()
        await self.bot.jobs.cancel(job)


async def setup(bot: AtelierBot) -> None:
    await bot.add_cog(Imagine(bot))
