"""The words on Atelier's messages (SPEC §6), kept in one place."""

from __future__ import annotations

from collections.abc import Sequence

import discord

from storage import JobRecord


def seeds_text(seeds: Sequence[int]) -> str:
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    return f"seeds {seeds[0]}–{seeds[-1]}"


# Room for the prompt in a message of at most 2000 characters, with the rest of the line and
# a note under it.
SHOWN_PROMPT_MAX = 1500


def headline(job: JobRecord, user_id: int | None = None) -> str:
    """`**<prompt>** — <@author>`"""
    prompt = discord.utils.escape_mentions(discord.utils.escape_markdown(job.prompt))
    if len(prompt) > SHOWN_PROMPT_MAX:  # escaping can double a prompt full of `_` or `*`
        prompt = prompt[:SHOWN_PROMPT_MAX].rstrip("\\") + "…"
    return f"**{prompt}** — <@{user_id if user_id is not None else job.user_id}>"


def result_text(job: JobRecord, hidden: Sequence[int] = (), prompt_chunks: int = 1) -> str:
    """`**<prompt>** — <@author> · seeds 42–45 · job `k3f9x2ab``, with notes below it when the
    prompt was long or the safety checker veiled some of the pictures."""
    text = f"{headline(job)} · {seeds_text(job.seeds)} · job `{job.id}`"
    if prompt_chunks > 1:
        text += (f"\n-# long prompt: encoded in {prompt_chunks} chunks of 75 tokens, none of it "
                 "cut off")
    if hidden:
        numbers = ", ".join(str(n) for n in hidden)
        text += (f"\n-# image{'s' if len(hidden) > 1 else ''} {numbers} veiled by the safety "
                 "checker: this channel is not marked NSFW")
    return text


def single_image_text(job: JobRecord, index: int, user_id: int) -> str:
    """The line of a `U<n>` message: image n of a job, for whoever asked for it."""
    seed = job.seeds[index - 1]
    return f"{headline(job, user_id)} · {seeds_text([seed])} · job `{job.id}` · image {index}"


def queued_text(job: JobRecord, position: int, loading: str | None = None) -> str:
    """`Queued — position 2`, and while the engine loads a model `· loading model (42 %)`."""
    return f"{headline(job)}\nQueued — position {position}" + (f" · {loading}" if loading else "")


def starting_text(job: JobRecord, loading: str) -> str:
    """A job whose turn has come, waiting for its model: `Starting — loading model (42 %)`."""
    return f"{headline(job)}\nStarting — {loading}"


def restarting_text(job: JobRecord) -> str:
    return f"{headline(job)}\nQueued — Atelier is restarting; this job runs when it is back"


def progress_text(job: JobRecord, step: int, total: int) -> str:
    return f"{headline(job)}\nstep {step}/{total}"


def cancelled_text(job: JobRecord) -> str:
    return f"{headline(job)}\nCancelled"


def failed_text(job: JobRecord, reason: str) -> str:
    return f"{headline(job)}\nFailed — {reason} · job `{job.id}`"


def no_job_text(job_id: str) -> str:
    """Foreign and unknown ids read alike, so nobody learns a job exists elsewhere."""
    safe = job_id[:32].replace("`", "").replace("\n", " ")
    return f"No job `{safe}` in this server."


def lineage_text(job: JobRecord) -> str | None:
    """Where a job comes from, `variation of image 3 of job `abc12345``; None for a new prompt."""
    if job.parent_job is None:
        return None
    image = f"image {job.parent_index} of " if job.parent_index is not None else ""
    return f"{job.kind} of {image}job `{job.parent_job}`"


def fit_lines(lines: Sequence[str], limit: int) -> str:
    """`lines` joined, cut at a line boundary to fit `limit` characters, saying how many were
    left out (`… and 3 more`)."""
    shown: list[str] = []
    used = 0
    for position, line in enumerate(lines):
        left = len(lines) - position
        marker = len(f"\n… and {left} more") if left > 1 else 0
        if used + len(line) + 1 + marker > limit:
            shown.append(f"… and {left} more")
            break
        shown.append(line)
        used += len(line) + 1
    return "\n".join(shown)
