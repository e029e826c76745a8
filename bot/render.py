"""The words on Atelier's messages (SPEC §6), kept in one place."""

from __future__ import annotations

from collections.abc import Sequence

import discord

from storage import JobKind, JobRecord


def seeds_text(seeds: Sequence[int]) -> str:
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    return f"seeds {seeds[0]}–{seeds[-1]}"


MESSAGE_MAX = 2000  # Discord's limit on a message's text
# Room for the prompt in a message, with the rest of the line and a note under it.
SHOWN_PROMPT_MAX = 1500
REASON_MAX = 300  # a failure's reason is cut beyond this (it should be a short sentence)
# Why a job failed when the cause is a bug or a fault, not something its author can change; the
# detail goes to the log, never to the channel.
INTERNAL_ERROR = "something went wrong on our side"

# What a waiting job's message adds while no image worker could start yet and the engine is
# trying again.
ENGINE_RETRYING = " · the image engine is starting (retrying)"


def shorten(text: str, limit: int) -> str:
    """`text` on one line, cut with `…` to at most `limit` characters."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[:limit - 1].rstrip() + "…"


def title(job: JobRecord) -> str:
    """What a job drew: its prompt, or for a job without one what made it (`/blend of 3
    pictures`, `/describe`)."""
    if job.prompt:
        return job.prompt
    if job.kind is JobKind.DESCRIBE:
        return "/describe"
    if job.references:
        return f"/blend of {len(job.references)} pictures"
    return "(no prompt)"


def headline(job: JobRecord, user_id: int | None = None, room: int = SHOWN_PROMPT_MAX) -> str:
    """`**<prompt>** — <@author>`, the prompt shown in at most `room` characters."""
    prompt = discord.utils.escape_mentions(discord.utils.escape_markdown(title(job)))
    room = max(1, min(room, SHOWN_PROMPT_MAX))
    if len(prompt) > room:  # escaping can double a prompt full of `_` or `*`
        prompt = prompt[:room - 1].rstrip("\\") + "…"
    return f"**{prompt}** — <@{user_id if user_id is not None else job.user_id}>"


def with_headline(job: JobRecord, rest: str, user_id: int | None = None) -> str:
    """The headline followed by `rest`, its prompt shortened so that the whole fits one
    message."""
    author = user_id if user_id is not None else job.user_id
    frame = len(f"**** — <@{author}>") + len(rest)
    return headline(job, user_id, MESSAGE_MAX - frame) + rest


def result_text(job: JobRecord, hidden: Sequence[int] = (), prompt_chunks: int = 1,
                notes: Sequence[str] = ()) -> str:
    """`**<prompt>** — <@author> · seeds 42–45 · job `k3f9x2ab``, with notes below it when the
    job is a draft, the prompt was long, the safety checker veiled some of the pictures, or a
    control picture was taken as its map as it is."""
    text = f" · {seeds_text(job.seeds)} · job `{job.id}`"
    if job.draft is not None:
        where = "this picture" if job.count == 1 else "a picture (U1–U4)"
        text += f"\n-# {DRAFT_NOTE}: `Enhance` on {where} renders it at full quality"
    for note in notes:
        text += f"\n-# {note}"
    if prompt_chunks > 1:
        text += (f"\n-# long prompt: encoded in {prompt_chunks} chunks of 75 tokens, none of it "
                 "cut off")
    if hidden:
        numbers = ", ".join(str(n) for n in hidden)
        text += (f"\n-# image{'s' if len(hidden) > 1 else ''} {numbers} veiled by the safety "
                 "checker: this channel is not marked NSFW")
    return with_headline(job, text)


def single_image_text(job: JobRecord, index: int, user_id: int) -> str:
    """The line of a `U<n>` message: image n of a job, for whoever asked for it."""
    seed = job.seeds[index - 1]
    return with_headline(job, f" · {seeds_text([seed])} · job `{job.id}` · image {index}",
                         user_id)


def queued_text(job: JobRecord, position: int, engine_retrying: bool = False,
                loading: str | None = None) -> str:
    """`Queued — position 2`, that the image engine is starting while it tries again, and
    while the engine loads a model `· loading model (42 %)`."""
    note = ENGINE_RETRYING if engine_retrying else f" · {loading}" if loading else ""
    return with_headline(job, f"\nQueued — position {position}{note}")


def starting_text(job: JobRecord, loading: str) -> str:
    """A job whose turn has come, waiting for its model: `Starting — loading model (42 %)`."""
    return with_headline(job, f"\nStarting — {loading}")


def restarting_text(job: JobRecord) -> str:
    return with_headline(job, "\nQueued — Atelier is restarting; this job runs when it is back")


def progress_text(job: JobRecord, step: int, total: int) -> str:
    return with_headline(job, f"\nstep {step}/{total}")


def cancelled_text(job: JobRecord) -> str:
    return with_headline(job, "\nCancelled")


def failed_text(job: JobRecord, reason: str) -> str:
    """`Failed — <reason> · job `k3f9x2ab``; a long reason is cut (the log has it whole)."""
    return with_headline(job, f"\nFailed — {shorten(reason, REASON_MAX)} · job `{job.id}`")


def moved_text(job: JobRecord) -> str:
    """What a job's earlier message says once a newer one, below it, shows the job."""
    return with_headline(job, "\n-# continued in a new message below")


# What a control picture is taken as when no annotator model makes its map (SPEC §3.2).
_TAKEN_AS_IS = {
    "depth": "no depth annotator is set up (SD_ANNOTATORS): the control image was used as the "
             "depth map as it is (white near, black far)",
    "pose": "no pose annotator is set up (SD_ANNOTATORS): the control image was used as a pose "
            "skeleton (OpenPose's colours) as it is",
    "lineart": "the control image was used as a line drawing: there is no lineart annotator to "
               "draw one from a photo",
}


def control_notes(job: JobRecord, annotated: bool) -> list[str]:
    """The note under a result whose control picture was its map as it is."""
    if job.control is None or job.control_weight == 0 or annotated:
        return []
    note = _TAKEN_AS_IS.get(job.control)
    return [f"`{job.control}`: {note}"] if note else []


SUGGESTION_MAX = 300  # characters of one /describe suggestion shown


def description_text(job: JobRecord) -> str:
    """`**/describe** — <@author> · job `k3f9x2ab`` and the numbered suggestions."""
    lines = [f"**{number}.** {discord.utils.escape_mentions(shorten(text, SUGGESTION_MAX))}"
             for number, text in enumerate(job.suggestion_list, start=1)]
    return with_headline(job, f" · job `{job.id}`\n" + "\n".join(lines))


def no_job_text(job_id: str) -> str:
    """Foreign and unknown ids read alike, so nobody learns a job exists elsewhere."""
    safe = job_id[:32].replace("`", "").replace("\n", " ")
    return f"No job `{safe}` in this server."


def nsfw_only_text(job_id: str) -> str:
    return (f"Job `{job_id}` was made in an NSFW channel; its pictures can be posted or used "
            "only in NSFW channels.")


CANNOT_POST = ("You cannot post pictures in this channel: that needs the Send Messages and "
               "Attach Files permissions here.")


def post_limit_text(limit: int) -> str:
    return (f"You had {limit} pictures posted in the last minute; wait a moment (at most {limit} "
            "a minute per person).")


_PAN_ARROWS = {"left": "⬅️", "right": "➡️", "up": "⬆️", "down": "⬇️"}
DRAFT_NOTE = "draft"


def draft_text(job: JobRecord) -> str | None:
    """`draft, for `xl`` (the model its pictures' Enhance renders on), or None."""
    if job.draft is None:
        return None
    return f"{DRAFT_NOTE}, for `{job.draft}` (Enhance renders its pictures there)"


def edit_text(edit: str | None) -> str | None:
    """What an edit did, in the words of its button: `zoom 2` → `Zoom Out 2x`, `pan left` →
    `⬅️ Pan`, `region 1,5` → `Vary (Region) of cells 1, 5`, `region painted` (the gallery's
    `Edit`) → `Vary (Region) of a painted area`; None for no edit."""
    if not edit:
        return None
    name, _, detail = edit.partition(" ")
    if name == "zoom":
        return f"Zoom Out {detail}x"
    if name == "pan":
        return f"{_PAN_ARROWS.get(detail, detail)} Pan"
    if name == "square":
        return "Make Square"
    if name == "region" and detail == "painted":
        return "Vary (Region) of a painted area"
    if name == "region":
        return f"Vary (Region) of cells {', '.join(detail.split(','))}"
    if name == "mask":
        return "redrawn where its mask is white"
    return edit


def lineage_text(job: JobRecord) -> str | None:
    """Where a job comes from — `variation of image 3 of job `abc12345``, `Zoom Out 2x of job
    `k3f9x2ab`, image 2` — or None for a new prompt."""
    if job.parent_job is None:
        return None
    if job.kind is JobKind.IMAGINE:  # a /describe's suggestion, started by its button
        return f"suggestion {job.parent_index} of /describe `{job.parent_job}`"
    edit = edit_text(job.edit)
    if edit is not None and job.kind != "reroll":
        image = f", image {job.parent_index}" if job.parent_index is not None else ""
        return f"{edit} of job `{job.parent_job}`{image}"
    image = f"image {job.parent_index} of " if job.parent_index is not None else ""
    return f"{job.kind} of {image}job `{job.parent_job}`"


def control_text(job: JobRecord) -> str | None:
    """`canny, --cw 1.5`: a job's ControlNet, or None."""
    if job.control is None:
        return None
    weight = 1.0 if job.control_weight is None else job.control_weight
    return f"{job.control}, --cw {weight:g}"


def reference_text(job: JobRecord) -> str | None:
    """`1 picture, --iw 1 · style reference, --sw 100`: a job's references, or None."""
    count = len(job.references)
    if not count:
        return None
    weight = 1.0 if job.image_weight is None else job.image_weight
    text = f"{count} picture{'s' if count > 1 else ''}, --iw {weight:g}"
    if job.style_weight is not None:
        text += f" · style reference, --sw {job.style_weight:g}"
    return text


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


def deleted_pictures_text(indexes: Sequence[int]) -> str:
    """`message of image 2 deleted`, `messages of images 2, 4 deleted` (indexes from 0): the
    pictures of a job whose message someone removed with 🗑️."""
    numbers = ", ".join(str(index + 1) for index in indexes)
    if len(indexes) == 1:
        return f"message of image {numbers} deleted"
    return f"messages of images {numbers} deleted"
