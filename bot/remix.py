"""Remix mode (a per-user setting): `V<n>`, `🔄`, `Vary` and the editing buttons first open a form
with the job's prompt and parameters to edit; `Custom Zoom` always does, with ` --zoom 2`."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import discord

from bot.jobs.making import remixed
from bot.options import remix_text, resolve_remix
from bot.prompt import PromptError
from bot.replies import OUR_FAULT, answer_error
from storage import JobRecord

if TYPE_CHECKING:
    from bot.client import AtelierBot

Interaction = discord.Interaction["AtelierBot"]

log = logging.getLogger(__name__)

# The form holds the prompt with its parameters written out (and `--no` text in the negative),
# so more than the 1000 characters of a prompt; parsing still limits the prompt itself.
REMIX_FIELD_MAX = 4000
# `--zoom X` (or `—zoom`), which only Custom Zoom's form takes: the rest is an ordinary prompt.
ZOOM_FLAG = re.compile(r"(?:^|(?<=\s))(?:--|—)zoom(?:\s+(?P<value>\S+))?\s*", re.IGNORECASE)

Submitted = Callable[[Interaction, str, str], Awaitable[None]]


class RemixModal(discord.ui.Modal):
    """The prompt and parameters of the job about to run, to edit first."""

    prompt: discord.ui.TextInput[RemixModal] = discord.ui.TextInput(
        label="Prompt", custom_id="prompt", style=discord.TextStyle.paragraph,
        max_length=REMIX_FIELD_MAX)
    negative: discord.ui.TextInput[RemixModal] = discord.ui.TextInput(
        label="Negative prompt", custom_id="negative", style=discord.TextStyle.paragraph,
        required=False, max_length=REMIX_FIELD_MAX)

    def __init__(self, title: str, job: JobRecord, on_submit: Submitted,
                 prompt: str | None = None) -> None:
        super().__init__(title=title[:45], timeout=15 * 60, custom_id="atelier:remix")
        self.prompt.default = remix_text(job) if prompt is None else prompt
        self.negative.default = job.negative
        self._on_submit = on_submit

    async def on_submit(self, interaction: Interaction) -> None:  # type: ignore[override]
        await self._on_submit(interaction, self.prompt.value, self.negative.value)

    async def on_error(self, interaction: Interaction,  # type: ignore[override]
                       error: Exception) -> None:
        log.error("a remix of %s failed", interaction.user, exc_info=error)
        await answer_error(interaction, OUR_FAULT)


async def rewritten(bot: AtelierBot, job: JobRecord, text: str, negative: str) -> JobRecord:
    """`job` with the prompt and parameters written in `text` (a form's, in Discord or the
    gallery); raises `PromptError` naming what is wrong with them."""
    await bot.catalogue.refresh_loras()
    params = resolve_remix(text, negative, job, bot.catalogue, count=job.count,
                           strength=job.strength)
    return remixed(job, params)


async def remix_params(bot: AtelierBot, interaction: Interaction, job: JobRecord, text: str,
                       negative: str) -> JobRecord | None:
    """`job` with the prompt and parameters written in the form, or None after telling the user
    what is wrong with them."""
    try:
        return await rewritten(bot, job, text, negative)
    except PromptError as error:
        await answer_error(interaction, f"❌ {error}")
        return None


async def start_or_remix(bot: AtelierBot, interaction: Interaction, job: JobRecord,
                         title: str) -> None:
    """Start `job`, or with remix mode on, first let the user edit its prompt."""
    settings = await bot.repo.settings(interaction.user.id)
    if not settings.remix:
        await bot.jobs.accept(interaction, job)
        return

    async def submitted(modal_interaction: Interaction, text: str, negative: str) -> None:
        edited = await remix_params(bot, modal_interaction, job, text, negative)
        if edited is not None:
            await bot.jobs.accept(modal_interaction, edited)

    await interaction.response.send_modal(RemixModal(title, job, submitted))


def take_zoom(text: str) -> tuple[str, str | None]:
    """Custom Zoom's text without its `--zoom`, and the value written after it (None when the
    flag is missing or has no value)."""
    match = ZOOM_FLAG.search(text)
    if match is None:
        return text, None
    rest = (text[:match.start()] + " " + text[match.end():]).strip()
    return " ".join(rest.split(" ")), match["value"]
