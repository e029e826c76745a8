"""Answering users when something goes wrong: privately, whatever state the interaction is in."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any

import discord

log = logging.getLogger(__name__)

OUR_FAULT = "Something went wrong on our side; please try again."


async def answer_error(interaction: discord.Interaction[Any], text: str) -> None:
    """Tell the user what went wrong, privately, whether or not the interaction was answered."""
    try:
        if interaction.response.is_done():
            await interaction.followup.send(text, ephemeral=True)
        else:
            await interaction.response.send_message(text, ephemeral=True)
    except discord.HTTPException:
        log.warning("could not report an error to %s", interaction.user)


async def withdraw(interaction: discord.Interaction[Any], text: str) -> None:
    """Take back a public "thinking…" placeholder and say privately why: for a command that
    deferred before it could check everything (a file to fetch), so nothing public is left."""
    try:
        await interaction.delete_original_response()
    except discord.HTTPException:
        log.warning("could not remove the placeholder of %s", interaction.user)
    await answer_error(interaction, text)


async def answering_errors(interaction: discord.Interaction[Any],
                           action: Awaitable[None], what: str) -> None:
    """Run what a button, menu or form does; an unexpected failure is logged and answered
    privately (the command tree's `on_error` does the same for commands)."""
    try:
        await action
    except Exception:
        log.exception("%s failed", what)
        await answer_error(interaction, OUR_FAULT)
