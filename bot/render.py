"""The words on Atelier's messages (SPEC §6), kept in one place."""

from __future__ import annotations

from collections.abc import Sequence

import discord

from storage import JobRecord


def seeds_text(seeds: Sequence[int]) -> str:
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    return f"seeds {seeds[0]}–{seeds[-1]}"


def headline(job: JobRecord, user_id: int | None = None) -> str:
    """`**<prompt>** — <@author>`"""
    prompt = discord.utils.escape_mentions(discord.utils.escape_markdown(job.prompt))
    return f"**{prompt}** — <@{user_id if user_id is not None else job.user_id}>"


def result_text(job: JobRecord) -> str:
    """`**<prompt>** — <@author> · seeds 42–45 · job `k3f9x2ab``"""
    return f"{headline(job)} · {seeds_text(job.seeds)} · job `{job.id}`"


def single_image_text(job: JobRecord, index: int, user_id: int) -> str:
    """The line of a `U<n>` message: image n of a job, for whoever asked for it."""
    seed = job.seeds[index - 1]
    return f"{headline(job, user_id)} · {seeds_text([seed])} · job `{job.id}` · image {index}"


def queued_text(job: JobRecord, position: int) -> str:
    return f"{headline(job)}\nQueued — position {position}"


def progress_text(job: JobRecord, step: int, total: int) -> str:
    return f"{headline(job)}\nstep {step}/{total}"


def cancelled_text(job: JobRecord) -> str:
    return f"{headline(job)}\nCancelled"


def failed_text(job: JobRecord, reason: str) -> str:
    return f"{headline(job)}\nFailed — {reason} · job `{job.id}`"


def no_job_text(job_id: str) -> str:
    """Foreign and unknown ids read alike, so nobody learns a job exists elsewhere."""
    safe = discord.utils.escape_markdown(job_id[:32]).replace("`", "")
    return f"No job `{safe}` in this server."
