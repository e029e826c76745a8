"""`/recall`: post an old result again, with working buttons, so anyone can continue from it."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import replace
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import render
from bot.access import may_post_here, nsfw_allowed, scope_of, visible_job
from bot.delivery import fitted
from bot.jobs.showing import result_render
from bot.replies import answer_error
from bot.ui import Action, Press
from storage import JobRecord, JobStatus

if TYPE_CHECKING:
    from bot.client import AtelierBot

Interaction = discord.Interaction["AtelierBot"]

log = logging.getLogger(__name__)

CHOICE_MAX = 100  # Discord's limit on an autocomplete choice's name
QUERY_MAX = 200  # what autocomplete searches of the text typed so far


def choice_label(job: JobRecord) -> str:
    """`k3f9x2ab · a red fox in the snow`, cut to fit an autocomplete choice."""
    label = f"{job.id} · {' '.join(render.title(job).split())}"
    return label if len(label) <= CHOICE_MAX else label[:CHOICE_MAX - 1] + "…"


class Recall(commands.Cog):
    def __init__(self, bot: AtelierBot) -> None:
        self.bot = bot
        # `/history`'s `Open…` menu recalls through this handler.
        bot.buttons.register({Action.HISTORY_OPEN: self.on_open})

    async def cog_unload(self) -> None:
        self.bot.buttons.unregister(Action.HISTORY_OPEN)

    @app_commands.command(name="recall")
    @app_commands.describe(job="The job's id (type words of its prompt to find it)")
    async def recall(self, interaction: Interaction,
                     job: app_commands.Range[str, 1, CHOICE_MAX]) -> None:
        """Post an earlier result again, with its buttons."""
        await self.post(interaction, job.strip().strip("`").lower())

    @recall.autocomplete("job")
    async def job_autocomplete(self, interaction: Interaction,
                               current: str) -> list[app_commands.Choice[str]]:
        jobs = await self.bot.repo.search_prompts(scope_of(interaction), current[:QUERY_MAX])
        return [app_commands.Choice(name=choice_label(job), value=job.id) for job in jobs]

    async def on_open(self, interaction: Interaction, press: Press) -> None:
        """A job picked in `/history`'s `Open…` menu (whatever the client sent: the recall
        checks it is one this member may see)."""
        if not press.values:
            await answer_error(interaction, "Pick a job in the menu to open it.")
            return
        await self.post(interaction, press.values[0])

    async def post(self, interaction: Interaction, job_id: str) -> None:
        """Post a finished job's grid (or single picture) publicly, as its result looked."""
        job = await visible_job(interaction, job_id)
        if job is None:
            return
        refusal = self.bot.policy.permission_refusal(interaction)
        if refusal is not None:
            await answer_error(interaction, refusal)
            return
        if job.status is not JobStatus.DONE:
            state = ("has not finished yet" if not job.status.finished
                     else f"has no pictures ({job.status})")
            await answer_error(interaction, f"Job `{job.id}` {state}.")
            return
        images = await self.bot.repo.images(job.id)
        if not images:
            await answer_error(interaction, f"Job `{job.id}` has no pictures.")
            return
        if not await may_post_here(interaction, job):
            return
        await interaction.response.defer(thinking=True)
        # Veiling follows the channel it is posted in now, not the one it was made in.
        shown = replace(job, nsfw_allowed=nsfw_allowed(interaction))
        try:
            result = await result_render(self.bot.store, shown, images)
            pictures = [await fitted(attachment, interaction.filesize_limit)
                        for attachment in result.attachments]
            await interaction.edit_original_response(
                content=result.content,
                attachments=[picture.file() for picture in pictures],
                view=result.view,
            )
        except Exception as error:
            # No public "thinking…" left behind, whatever went wrong.
            with contextlib.suppress(discord.HTTPException):
                await interaction.delete_original_response()
            if not isinstance(error, OSError):
                raise
            log.exception("could not read the pictures of job %s", job.id)
            await answer_error(interaction, f"The pictures of job `{job.id}` are missing.")


async def setup(bot: AtelierBot) -> None:
    await bot.add_cog(Recall(bot))
