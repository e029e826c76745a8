"""Who may see and act on which jobs: a server's jobs belong to that server, DM jobs to their user."""

from __future__ import annotations

from typing import Any

import discord

from storage import JobRecord, Scope


def scope_of(interaction: discord.Interaction[Any]) -> Scope:
    """The jobs this interaction may see: its server's, or in DMs the user's own."""
    return Scope(interaction.guild_id, interaction.user.id)


def may_manage(interaction: discord.Interaction[Any], job: JobRecord) -> bool:
    """The author, or a member allowed to manage messages where the button was pressed."""
    if interaction.user.id == job.user_id:
        return True
    return interaction.guild_id is not None and interaction.permissions.manage_messages
