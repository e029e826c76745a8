"""The message context menu `Image info`: a picture's parameters, seeds and lineage, privately."""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import render
from bot.access import scope_of, visible_job
from bot.engine.samplers import SAMPLERS
from bot.replies import answer_error
from storage import ImageRecord, JobRecord, JobStatus

if TYPE_CHECKING:
    from bot.client import AtelierBot

Interaction = discord.Interaction["AtelierBot"]

NO_IMAGE = "This message has no Atelier image."
CONTROL_MAP_FILE = "control_map.png"
FIELD_MAX = 1024  # Discord's limit on an embed field's value
# `job `k3f9x2ab`` on a result, `… · job `k3f9x2ab` · image 2` on a `U<n>` picture. The prompt
# before it has its backticks escaped, so only the bot's own mark matches.
JOB_MARK = re.compile(r"(?<!\\)job `(?P<job>[a-z][a-z0-9]{7})`(?: · image (?P<index>\d+))?")


def job_mark(content: str) -> tuple[str, int | None] | None:
    """The job id (and image number) a message of Atelier shows, from its last mark."""
    marks = list(JOB_MARK.finditer(content))
    if not marks:
        return None
    last = marks[-1]
    return last["job"], int(last["index"]) if last["index"] else None


def clip(text: str, limit: int = FIELD_MAX) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def escaped(text: str) -> str:
    return discord.utils.escape_mentions(discord.utils.escape_markdown(text))


def numbered_seeds(seeds: Sequence[int]) -> str:
    """`1: 42 · 2: 43 · …`, numbered like the `U` buttons."""
    if len(seeds) == 1:
        return str(seeds[0])
    return " · ".join(f"{number}: {seed}" for number, seed in enumerate(seeds, start=1))


def status_text(job: JobRecord, deleted: Sequence[int] = ()) -> str:
    """`done`, `failed — why`, and `(message of image 2 deleted)` for the pictures (`deleted`,
    from 0) whose message was deleted."""
    text = str(job.status)
    if job.status is JobStatus.FAILED and job.error:
        text += f" — {job.error}"
    if deleted:
        text += f" ({render.deleted_pictures_text(deleted)})"
    return clip(text)


def child_line(child: JobRecord) -> str:
    """`` `k3f9x2ab` — variation of image 3 (done)``"""
    image = f" of image {child.parent_index}" if child.parent_index is not None else ""
    return f"`{child.id}` — {child.kind}{image} ({child.status})"


def info_embed(job: JobRecord, images: Sequence[ImageRecord], children: Sequence[JobRecord],
               index: int | None = None, deleted: Sequence[int] = ()) -> discord.Embed:
    """Everything about `job`, or about its image `index` (1-based) when the message shows one."""
    title = f"Image {index} of job {job.id}" if index is not None else f"Job {job.id}"
    embed = discord.Embed(title=title, description=f"**{escaped(render.title(job))}**")
    if job.negative:
        embed.add_field(name="Negative prompt", value=clip(escaped(job.negative)), inline=False)
    embed.add_field(name="Model", value=job.model)
    known = SAMPLERS.get(job.sampler)
    embed.add_field(name="Sampler",
                    value=f"{job.sampler} ({known.label})" if known else job.sampler)
    embed.add_field(name="Size", value=f"{job.width}×{job.height}")
    embed.add_field(name="Steps", value=str(job.steps))
    embed.add_field(name="CFG scale", value=f"{job.guidance:g}")
    if job.strength is not None:
        embed.add_field(name="Strength", value=f"{job.strength:g}")
    control = render.control_text(job)
    if control is not None:
        shown = " (its map below)" if job.control_map is not None else ""
        embed.add_field(name="ControlNet", value=control + shown, inline=False)
    reference = render.reference_text(job)
    if reference is not None:
        embed.add_field(name="Reference", value=reference, inline=False)
    if job.suggestion_list:
        embed.add_field(name="Suggestions", value=clip("\n".join(
            f"{number}. {escaped(text)}"
            for number, text in enumerate(job.suggestion_list, start=1))), inline=False)
    seeds = [image.seed for image in images] or job.seeds  # the stored ones are those used
    if index is not None and 1 <= index <= len(seeds):
        embed.add_field(name="Seed", value=str(seeds[index - 1]))
    if len(seeds) > 1 or index is None:
        embed.add_field(name="Seeds" if len(seeds) > 1 else "Seed", value=numbered_seeds(seeds),
                        inline=False)
    embed.add_field(name="Status", value=status_text(job, deleted))
    notes = [note for note in (render.edit_text(job.edit), render.draft_text(job)) if note]
    embed.add_field(name="Kind", value=" — ".join([job.kind, *notes]))
    embed.add_field(name="Author", value=f"<@{job.user_id}>")
    embed.add_field(name="Created", value=f"<t:{int(job.created_at)}:f>")
    lineage = render.lineage_text(job)
    if lineage is None and job.init_image is not None:
        lineage = ("an uploaded picture, redrawn where an uploaded mask is white"
                   if job.mask_image is not None else "an uploaded picture")
    embed.add_field(name="Made from", value=lineage or "a new prompt", inline=False)
    embed.add_field(name="Made from it",
                    value=render.fit_lines([child_line(c) for c in children], FIELD_MAX)
                    if children else "nothing yet", inline=False)
    return embed


class ImageInfo(commands.Cog):
    def __init__(self, bot: AtelierBot) -> None:
        self.bot = bot
        self.menu = app_commands.ContextMenu(name="Image info", callback=self.image_info)
        bot.tree.add_command(self.menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.menu.name, type=self.menu.type)

    async def image_info(self, interaction: Interaction, message: discord.Message) -> None:
        """Parameters, seeds and lineage of a picture Atelier made."""
        if self.bot.user is None or message.author.id != self.bot.user.id:
            await answer_error(interaction, NO_IMAGE)
            return
        index = None
        scope = scope_of(interaction)
        mark = job_mark(message.content)
        if mark is not None:
            job_id, index = mark
            job = await visible_job(interaction, job_id, scope)
            if job is None:
                return
        else:
            # A placeholder, a cancelled or an old message: the database knows its job.
            job = await self.bot.repo.job_for_message(message.id, scope)
            if job is None:
                await answer_error(interaction, NO_IMAGE)
                return
        images = await self.bot.repo.images(job.id)
        children = await self.bot.repo.children(job.id, scope)
        deleted = (await self.bot.repo.deleted_pictures([job.id])).get(job.id, ())
        embed = info_embed(job, images, children, index, deleted)
        files = []
        path = self.bot.store.find(job.control_map) if job.control_map is not None else None
        if path is not None:  # the control map the ControlNet read
            data = await asyncio.to_thread(path.read_bytes)
            files.append(discord.File(io.BytesIO(data), CONTROL_MAP_FILE))
            embed.set_image(url=f"attachment://{CONTROL_MAP_FILE}")
        await interaction.response.send_message(embed=embed, files=files, ephemeral=True)


async def setup(bot: AtelierBot) -> None:
    await bot.add_cog(ImageInfo(bot))
