"""Editing a picture (SPEC §3.1): `Zoom Out 2x`, `Zoom Out 1.5x`, `Custom Zoom`, `Make Square`,
the pan arrows `⬅️` `➡️` `⬆️` `⬇️`, and `Vary (Region)` with its private panel of cells.

Each edit is a public job of four pictures with fresh seeds, made from one picture of a job;
the kept part of the picture stays as it was, the rest is drawn anew (`bot.engine.canvas`)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from typing import TYPE_CHECKING

import discord
from discord.ext import commands
from PIL import Image

from bot.access import usable_image, visible_image
from bot.engine.canvas import cells_mask
from bot.engine.families import Family
from bot.imaging import decode, region_sheet
from bot.jobs import JobRefused, Origin
from bot.jobs.making import panned, region, squared, zoomed
from bot.options import remix_text
from bot.remix import RemixModal, remix_params, start_or_remix, take_zoom
from bot.replies import answer_error
from bot.ui import Action, Handler, Press, parse_cells, region_view
from storage import ImageRecord, JobRecord

if TYPE_CHECKING:
    from bot.client import AtelierBot

Interaction = discord.Interaction["AtelierBot"]

CUSTOM_ZOOM_DEFAULT = 2.0
PANS = {Action.PAN_LEFT: "left", Action.PAN_RIGHT: "right", Action.PAN_UP: "up",
        Action.PAN_DOWN: "down"}
NO_CELLS = "Choose the cells to redraw first (the menu above `Redraw`)."


def _png(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


class Edit(commands.Cog):
    def __init__(self, bot: AtelierBot) -> None:
        self.bot = bot
        self.actions = {
            Action.ZOOM_2: self.on_zoom_2, Action.ZOOM_15: self.on_zoom_15,
            Action.ZOOM_CUSTOM: self.on_custom_zoom, Action.SQUARE: self.on_square,
            **{action: self._pan(direction) for action, direction in PANS.items()},
            Action.VARY_REGION: self.on_vary_region, Action.REGION_CELLS: self.on_cells,
            Action.REDRAW: self.on_redraw,
        }
        bot.buttons.register(self.actions)

    async def cog_unload(self) -> None:
        self.bot.buttons.unregister(*self.actions)

    async def _edit(self, interaction: Interaction, press: Press, title: str,
                    make: Callable[[Origin, JobRecord, ImageRecord, Family], JobRecord]) -> None:
        """Start the edit `make` builds from the pressed picture (refusing it with its reason),
        through remix mode."""
        found = await usable_image(interaction, press.job_id, press.index)
        if found is None:
            return
        parent, image = found
        family = self.bot.catalogue.family_of(parent.model)
        try:
            job = make(Origin.of(interaction), parent, image, family)
        except JobRefused as error:
            await answer_error(interaction, f"❌ {error}")
            return
        await start_or_remix(self.bot, interaction, job, f"Remix — {title}")

    # ---- Zoom Out, Make Square, Pan -------------------------------------------------------

    async def zoom(self, interaction: Interaction, press: Press, factor: float) -> None:
        await self._edit(interaction, press, f"Zoom Out {factor:g}x",
                         lambda origin, parent, image, family:
                         zoomed(origin, parent, image, factor, family))

    async def on_zoom_2(self, interaction: Interaction, press: Press) -> None:
        """`Zoom Out 2x`: the picture at half its size, in the middle of a new scene."""
        await self.zoom(interaction, press, 2.0)

    async def on_zoom_15(self, interaction: Interaction, press: Press) -> None:
        """`Zoom Out 1.5x`."""
        await self.zoom(interaction, press, 1.5)

    async def on_custom_zoom(self, interaction: Interaction, press: Press) -> None:
        """`Custom Zoom`: a form with the prompt and ` --zoom 2` to change (1 to 2)."""
        found = await usable_image(interaction, press.job_id, press.index)
        if found is None:
            return
        parent, image = found
        family = self.bot.catalogue.family_of(parent.model)

        async def submitted(modal_interaction: Interaction, text: str, negative: str) -> None:
            prompt, written = take_zoom(text)
            try:
                factor = CUSTOM_ZOOM_DEFAULT if written is None else float(written)
            except ValueError:
                await answer_error(modal_interaction,
                                   f"❌ `--zoom` must be a number from 1 to 2, got `{written}`")
                return
            try:
                job = zoomed(Origin.of(modal_interaction), parent, image, factor, family)
            except JobRefused as error:
                await answer_error(modal_interaction, f"❌ {error}")
                return
            edited = await remix_params(self.bot, modal_interaction, job, prompt, negative)
            if edited is not None:
                await self.bot.jobs.accept(modal_interaction, edited)

        text = f"{remix_text(parent)} --zoom {CUSTOM_ZOOM_DEFAULT:g}"
        await interaction.response.send_modal(
            RemixModal("Custom Zoom", parent, submitted, prompt=text))

    async def on_square(self, interaction: Interaction, press: Press) -> None:
        """`Make Square`: the picture in the middle of a square, the sides new."""
        await self._edit(interaction, press, "Make Square",
                         lambda origin, parent, image, _: squared(origin, parent, image))

    def _pan(self, direction: str) -> Handler:
        async def on_pan(interaction: Interaction, press: Press) -> None:
            await self.pan(interaction, press, direction)

        return on_pan

    async def pan(self, interaction: Interaction, press: Press, direction: str) -> None:
        """`⬅️` `➡️` `⬆️` `⬇️`: the scene goes on by half the picture on that side."""
        await self._edit(interaction, press, f"Pan {direction}",
                         lambda origin, parent, image, family:
                         panned(origin, parent, image, direction, family))

    # ---- Vary (Region) --------------------------------------------------------------------

    async def _sheet(self, image: ImageRecord, chosen: frozenset[int]) -> discord.File:
        def draw() -> bytes:
            return _png(region_sheet(decode(self.bot.store.read(image.path)), chosen))

        return discord.File(io.BytesIO(await asyncio.to_thread(draw)), filename="region.png")

    @staticmethod
    def _panel_text(job: JobRecord, image: ImageRecord, chosen: frozenset[int]) -> str:
        cells = ", ".join(str(cell) for cell in sorted(chosen)) or "none yet"
        return (f"**Vary (Region)** — image {image.index + 1} of job `{job.id}`\n"
                f"Choose the cells to redraw, then press `Redraw`. Cells chosen: {cells}")

    async def on_vary_region(self, interaction: Interaction, press: Press) -> None:
        """`Vary (Region)`: privately, the picture under a numbered 3×3 grid to choose cells."""
        found = await usable_image(interaction, press.job_id, press.index)
        if found is None:
            return
        parent, image = found
        await interaction.response.defer(ephemeral=True, thinking=True)
        await interaction.edit_original_response(
            content=self._panel_text(parent, image, frozenset()),
            attachments=[await self._sheet(image, frozenset())],
            view=region_view(parent.id, image.index + 1, frozenset()))

    async def on_cells(self, interaction: Interaction, press: Press) -> None:
        """`Cells to redraw`: the panel shows the chosen cells."""
        found = await visible_image(interaction, press.job_id, press.index)
        if found is None:
            return
        parent, image = found
        chosen = parse_cells("".join(press.values))
        await interaction.response.defer()
        await interaction.edit_original_response(
            content=self._panel_text(parent, image, chosen),
            attachments=[await self._sheet(image, chosen)],
            view=region_view(parent.id, image.index + 1, chosen))

    async def on_redraw(self, interaction: Interaction, press: Press) -> None:
        """`Redraw`: a form with the prompt (say what should appear), then the job."""
        cells = parse_cells(press.detail)
        if not cells:
            await answer_error(interaction, NO_CELLS)
            return
        found = await usable_image(interaction, press.job_id, press.index)
        if found is None:
            return
        parent, image = found

        async def submitted(modal_interaction: Interaction, text: str, negative: str) -> None:
            mask = await asyncio.to_thread(
                lambda: _png(cells_mask(cells, image.width, image.height)))
            job = region(Origin.of(modal_interaction), parent, image, cells)
            edited = await remix_params(self.bot, modal_interaction, job, text, negative)
            if edited is not None:
                await self.bot.jobs.accept(modal_interaction, edited, mask=mask)

        await interaction.response.send_modal(
            RemixModal("Vary (Region)", parent, submitted))


async def setup(bot: AtelierBot) -> None:
    await bot.add_cog(Edit(bot))
