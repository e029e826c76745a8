"""`/imagine`, and the buttons that act on its result as it is: `U<n>` and `Cancel`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import limits, render
from bot.access import may_manage, may_post_here, nsfw_allowed, visible_image, visible_job
from bot.delivery import Attachment, fitted
from bot.engine.types import CONTROLS
from bot.imaging import decode, encode_png, veil
from bot.jobs import JobRefused, Origin
from bot.jobs.making import new_job
from bot.options import ImagineOptions, resolve
from bot.prompt import PromptError
from bot.replies import answer_error, withdraw
from bot.ui import Action, Press, single_image_view
from bot.uploads import check_declared, fetch, fetch_mask
from storage import JobRecord, UserSettings

if TYPE_CHECKING:
    from bot.client import AtelierBot

Interaction = discord.Interaction["AtelierBot"]

log = logging.getLogger(__name__)

LORA_OPTION_MAX = 100  # Discord's limit on an autocomplete choice


class Imagine(commands.Cog):
    def __init__(self, bot: AtelierBot) -> None:
        self.bot = bot
        bot.buttons.register({Action.SINGLE: self.on_single, Action.CANCEL: self.on_cancel})

    async def cog_unload(self) -> None:
        self.bot.buttons.unregister(Action.SINGLE, Action.CANCEL)

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
        mask="With an image: redraw only where this mask is white (black is kept)",
        strength="With an image: how far to move away from it (0.05–1.0)",
        lora="LoRAs to apply, like detail:0.8, style (or <lora:detail:0.8> in the prompt)",
        control_image="ControlNet: hold the drawing to this picture's edges, depth, pose…",
        control="What the ControlNet takes from the control image (--cw 0–2 sets how strongly)",
        reference="Let this picture steer the drawing (--iw 0–3; --sref for its style only)",
    )
    @app_commands.choices(
        aspect=[app_commands.Choice(name=a, value=a) for a in limits.ASPECT_CHOICES],
        control=[app_commands.Choice(name=c, value=c) for c in CONTROLS],
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
        mask: discord.Attachment | None = None,
        strength: app_commands.Range[float, limits.STRENGTH_MIN, limits.STRENGTH_MAX] | None = None,
        lora: app_commands.Range[str, 1, LORA_OPTION_MAX] | None = None,
        control_image: discord.Attachment | None = None,
        control: str | None = None,
        reference: discord.Attachment | None = None,
    ) -> None:
        """Create images from a text prompt."""
        options = ImagineOptions(
            prompt=prompt, negative=negative, aspect=aspect, count=count, seed=seed, steps=steps,
            guidance=guidance, model=model, strength=strength, has_image=image is not None,
            lora=lora, control=control, has_control_image=control_image is not None,
            has_reference=reference is not None,
        )
        uploads = Uploads(image, mask, control_image, reference)
        try:
            defaults = await self.bot.repo.settings(interaction.user.id)
            await self.bot.catalogue.refresh_loras()
            params = resolve(options, defaults, self.bot.catalogue)
            if mask is not None and image is None:
                raise PromptError("A `mask` needs an `image` to redraw: give both")
            for attachment in uploads.given():
                check_declared(attachment.filename, attachment.size, attachment.content_type)
        except PromptError as error:
            await answer_error(interaction, f"❌ {error}")
            return
        job = new_job(Origin.of(interaction), params)
        if not uploads.given():
            await self.bot.jobs.accept(interaction, job)
        else:
            await self._accept_with_pictures(interaction, job, uploads, options, defaults)

    async def _accept_with_pictures(self, interaction: Interaction, job: JobRecord,
                                    uploads: Uploads, options: ImagineOptions,
                                    defaults: UserSettings) -> None:
        """`/imagine` with uploaded pictures: one to start from (and a mask of where to redraw
        it), a control picture, a reference. Fetching and converting them can outlast the 3 s
        Discord gives, so the command defers first (SPEC §6), after every check that needs no
        download; a file that turns out bad then takes the placeholder back."""
        # 1-2. Refuse now what the pictures cannot change, then acknowledge publicly
        acknowledged = await self.bot.jobs.acknowledge(interaction, job, "/imagine")
        if acknowledged is None:
            return
        try:
            # 3. Fetch, check and convert the pictures; the job takes the aspect of the
            #    picture it starts from, else of its control picture
            timeout = self.bot.settings.download_timeout
            fetched = {name: await fetch(attachment, timeout)
                       for name, attachment in uploads.pictures().items()}
            mask_png = (await fetch_mask(uploads.mask, timeout)
                        if uploads.mask is not None else None)
            sized = fetched.get("image") or fetched.get("control_image")
            if sized is not None:
                options = replace(options, image_size=(sized[1], sized[2]))
            params = resolve(options, defaults, self.bot.catalogue)
            # 4. Store them and save the job; a job refused now takes its files with it
            origin = Origin.of(interaction)
            async with contextlib.AsyncExitStack() as stack:
                stored = {name: await stack.enter_async_context(
                    self.bot.housekeeping.upload(png)) for name, (png, _, _) in fetched.items()}
                mask_sha = None
                if mask_png is not None:
                    mask_sha = await stack.enter_async_context(
                        self.bot.housekeeping.upload(mask_png))
                reference = stored.get("reference")
                job = await self.bot.policy.admit(replace(
                    new_job(origin, params, init_image=stored.get("image"), mask_image=mask_sha,
                            control_image=stored.get("control_image"),
                            references=(reference,) if reference else ()),
                    message_id=acknowledged.placeholder))
        except (PromptError, JobRefused) as error:
            await withdraw(interaction, f"❌ {error}")
            return
        except Exception:
            await _quietly_delete(interaction)  # the tree's error handler answers privately
            raise
        # 5. Run it: the placeholder becomes the result
        self.bot.jobs.start(job)

    @imagine.autocomplete("model")
    async def model_autocomplete(self, interaction: Interaction,
                                 current: str) -> list[app_commands.Choice[str]]:
        current = current.lower()
        return [
            app_commands.Choice(name=f"{spec.name} ({spec.family.label})", value=spec.name)
            for spec in self.bot.catalogue
            if current in spec.name
        ][:25]

    @imagine.autocomplete("lora")
    async def lora_autocomplete(self, interaction: Interaction,
                                current: str) -> list[app_commands.Choice[str]]:
        """LoRA names for the last entry of `detail:0.8, sty…`, keeping what comes before."""
        *done, typing = current.split(",")
        before = [part.strip() for part in done if part.strip()]
        name, colon, weight = typing.strip().partition(":")
        names = await asyncio.to_thread(self.bot.catalogue.lora_names)
        choices = []
        for found in names:
            if name.lower() not in found.lower():
                continue
            value = ", ".join([*before, found + (colon + weight.strip() if colon else "")])
            if len(value) <= LORA_OPTION_MAX:
                choices.append(app_commands.Choice(name=value, value=value))
        return choices[:25]

    async def on_single(self, interaction: Interaction, press: Press) -> None:
        """`U<n>`: image n alone, full size, as a PNG carrying its parameters."""
        found = await visible_image(interaction, press.job_id, press.index)
        if found is None:
            return
        job, image = found
        refusal = self.bot.policy.permission_refusal(interaction)
        if refusal is not None:
            await answer_error(interaction, refusal)
            return
        if not await may_post_here(interaction, job):
            return
        # Answer at once; reading, maybe veiling or re-encoding, and uploading a 4 MP picture
        # can take longer than Discord's 3 s.
        await interaction.response.defer(thinking=True)
        try:
            data = await asyncio.to_thread(self.bot.store.read, image.path)
            number = image.index + 1
            filename = f"atelier_{job.id}_{number}.png"
            text = render.single_image_text(job, number, interaction.user.id)
            if image.nsfw and not nsfw_allowed(interaction):
                data = await asyncio.to_thread(lambda: encode_png(veil(decode(data))))
                filename = "SPOILER_" + filename
                text += "\n-# veiled by the safety checker: this channel is not marked NSFW"
            picture = await fitted(Attachment(filename, data), interaction.filesize_limit)
            await interaction.edit_original_response(
                content=text,
                attachments=[picture.file()],
                view=single_image_view(job.id, number, square=image.width == image.height,
                                       draft=job.draft is not None),
                allowed_mentions=discord.AllowedMentions(users=[interaction.user]),
            )
        except Exception:
            await _quietly_delete(interaction)  # no public "thinking…" left behind
            raise

    async def on_cancel(self, interaction: Interaction, press: Press) -> None:
        """`Cancel`: stop a queued or running job (its author, or Manage Messages)."""
        job = await visible_job(interaction, press.job_id)
        if job is None:
            return
        if not may_manage(interaction, job):
            await answer_error(interaction, "Only the author of this job can cancel it.")
            return
        if job.status.finished:
            await answer_error(interaction, f"Job `{job.id}` has already finished.")
            return
        await interaction.response.defer()
        if not await self.bot.jobs.cancel(job):
            await answer_error(interaction, f"Job `{job.id}` has already finished.")


@dataclass(frozen=True)
class Uploads:
    """The pictures given to `/imagine`."""

    image: discord.Attachment | None
    mask: discord.Attachment | None
    control_image: discord.Attachment | None
    reference: discord.Attachment | None

    def pictures(self) -> dict[str, discord.Attachment]:
        """The pictures given (not the mask), by option name."""
        named = {"image": self.image, "control_image": self.control_image,
                 "reference": self.reference}
        return {name: attachment for name, attachment in named.items() if attachment is not None}

    def given(self) -> list[discord.Attachment]:
        return [a for a in (self.image, self.mask, self.control_image, self.reference)
                if a is not None]


async def _quietly_delete(interaction: Interaction) -> None:
    try:
        await interaction.delete_original_response()
    except discord.HTTPException:
        pass


async def setup(bot: AtelierBot) -> None:
    await bot.add_cog(Imagine(bot))
