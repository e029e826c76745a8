"""`/info`: the models, the engine, the queue and the caller's place in it, answered privately."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import render
from bot.access import scope_of
from bot.engine.executor import EngineState
from bot.engine.types import EngineError
from bot.engine.worker import resolve_device, resolve_dtype
from bot.options import DRAFT_STEPS
from storage import JobRecord, JobStatus, Scope

if TYPE_CHECKING:
    from bot.client import AtelierBot

Interaction = discord.Interaction["AtelierBot"]

FIELD_MAX = 1024  # Discord's limit on an embed field's value
PROMPT_PREVIEW = 60

# What the Workers field says of an engine that no worker serves.
ENGINE_NOTES = {
    EngineState.RETRYING: "the image engine is starting (retrying after a failure)",
    EngineState.UNABLE: "the image engine is not running; the bot's log says why",
}


def duration_text(seconds: float) -> str:
    """`3d 4h`, `2h 5m`, `4m 10s`, `12s`: the two largest units that are not zero."""
    remaining = max(0, int(seconds))
    parts: list[str] = []
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)):
        amount, remaining = divmod(remaining, size)
        if amount or (unit == "s" and not parts):
            parts.append(f"{amount}{unit}")
    return " ".join(parts[:2])


def job_line(job: JobRecord | None, job_id: str, state: str, scope: Scope) -> str:
    """One of the caller's jobs; a job from another server shows no id or prompt here."""
    if job is None or not job.visible_to(scope):
        return f"a job in another server or DM — {state}"
    title = render.title(job)
    prompt = title if len(title) <= PROMPT_PREVIEW else title[:PROMPT_PREVIEW] + "…"
    prompt = discord.utils.escape_markdown(discord.utils.escape_mentions(prompt))
    return f"`{job_id}` {prompt} — {state}"


class Info(commands.Cog):
    def __init__(self, bot: AtelierBot) -> None:
        self.bot = bot

    @app_commands.command(name="info")
    async def info(self, interaction: Interaction) -> None:
        """Models, device, queue, your queued jobs and their positions, speed and uptime."""
        stats = self.bot.executor.stats()
        embed = discord.Embed(title="Atelier")
        embed.add_field(name="Models", value=self.models_text(), inline=False)
        embed.add_field(name="Drafts", value=self.draft_text(), inline=False)
        embed.add_field(name="Device", value=self.device_text())
        embed.add_field(name="Workers", value=self.workers_text(), inline=False)
        embed.add_field(name="Queue", value=self.queue_text(stats.queued, stats.running))
        speed = stats.seconds_per_image
        embed.add_field(name="Speed",
                        value=f"{speed:.2f} s per image (recent)" if speed is not None
                        else "no images yet")
        embed.add_field(name="Jobs done", value=str(stats.jobs_done))
        embed.add_field(name="Uptime", value=duration_text(time.time() - self.bot.started_at))
        embed.add_field(name="Your jobs", value=await self.your_jobs_text(interaction),
                        inline=False)
        await interaction.response.send_message(embed=embed, ephemeral=True)

    def models_text(self) -> str:
        """Each model with its family and defaults, and what its family does not take:
        `**flux** — FLUX.1 [schnell] · 1024×1024 · 4 steps · CFG 0 · euler · prompts up to 256
        T5 tokens · no negative prompt · no `::` weights`."""
        default = self.bot.catalogue.default
        lines = []
        for spec in self.bot.catalogue:
            family = spec.family
            mark = " (default)" if spec is default else ""
            side = family.native_side
            limits = family.limits_text()
            lines.append(f"**{spec.name}**{mark} — {family.label} · {side}×{side}"
                         f" · {family.steps} steps · CFG {family.guidance:g} · {family.sampler}"
                         + (f" · {limits}" if limits else ""))
        return render.fit_lines(lines, FIELD_MAX)

    def draft_text(self) -> str:
        """What `--draft` runs."""
        draft = self.bot.catalogue.draft
        if draft is not None:
            return (f"`--draft` runs on **{draft.name}** ({draft.family.label}, "
                    f"{draft.family.steps} steps); `Enhance` renders a picture on its own model")
        return (f"`--draft` runs each model in at most {DRAFT_STEPS} steps; `Enhance` renders a "
                "picture at full quality")

    def device_text(self) -> str:
        started = [w for w in self.bot.executor.workers() if w.device]
        if started:  # workers on several machines may differ
            return ", ".join(dict.fromkeys(f"{w.device} · {w.dtype}" for w in started))
        if "torch" not in sys.modules:  # importing it here would stall the event loop
            return f"{self.bot.settings.sd_device} · starting…"
        # not started yet: the choice a local worker makes from the same settings
        try:
            device = resolve_device(self.bot.settings.sd_device)
        except EngineError:
            return f"{self.bot.settings.sd_device} · no usable GPU (see the log)"
        dtype = resolve_dtype(self.bot.settings.sd_dtype, device)
        return f"{device} · {str(dtype).removeprefix('torch.')}"

    def workers_text(self) -> str:
        """How many workers serve the queue (and why none does), then each: where, on what,
        holding what, state."""
        workers = self.bot.executor.workers()
        note = ENGINE_NOTES.get(self.bot.executor.engine_state())
        if not workers:
            return note or "starting…"
        alive = sum(w.alive for w in workers)
        lines = [f"{alive} of {len(workers)} up" + (f" · {note}" if note else "")]
        for w in workers:
            models = ", ".join(w.models) or "no model loaded"
            jobs = f"{w.jobs_done} job{'s' if w.jobs_done != 1 else ''}"
            place = f"{w.node} · {w.device}" if w.device else w.node or "?"
            state = f"{w.state}, {w.loading}" if w.loading else w.state
            lines.append(f"`{w.name}` {place} · {models} · {jobs} — {state}")
        return render.fit_lines(lines, FIELD_MAX)

    @staticmethod
    def queue_text(queued: int, running: int) -> str:
        if not queued and not running:
            return "empty"
        total = queued + running
        return f"{total} job{'s' if total != 1 else ''} ({running} running, {queued} waiting)"

    async def your_jobs_text(self, interaction: Interaction) -> str:
        """The caller's running jobs, then the waiting ones with their places in the queue."""
        user_key = str(interaction.user.id)
        waiting = {request.job_id: place for request, place in self.bot.executor.queued_jobs()
                   if request.user_key == user_key}
        active = await self.bot.repo.active_jobs(interaction.user.id)
        records = {job.id: job for job in active}
        scope = scope_of(interaction)
        lines = [
            job_line(job, job.id, "running" if job.status is JobStatus.RUNNING else "starting",
                     scope)
            for job in active if job.id not in waiting
        ]
        lines += [job_line(records.get(job_id), job_id, f"position {place}", scope)
                  for job_id, place in waiting.items()]
        if not lines:
            return "You have no jobs queued or running."
        limit = self.bot.settings.max_queue_per_user
        lines.append(f"_at most {limit} queued or running at a time_")
        return render.fit_lines(lines, FIELD_MAX)


async def setup(bot: AtelierBot) -> None:
    await bot.add_cog(Info(bot))
