"""Buttons on Atelier's messages, as persistent `DynamicItem`s.

Every button's custom id carries its action, its job and (where it matters) an image number, so a
press still works after a restart; what a press does is registered by the cogs that own the
feature (`AtelierBot.button_handlers`)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import discord

from bot.replies import answering_errors

if TYPE_CHECKING:
    from bot.client import AtelierBot

JOB_ID_PATTERN = r"[a-z][a-z0-9]{7}"


@dataclass(frozen=True)
class Action:
    code: str  # as written in custom ids
    label: str | None
    emoji: str | None = None
    style: discord.ButtonStyle = discord.ButtonStyle.secondary
    numbered: bool = False  # label gets the image number, `U` → `U2`


ACTIONS = {
    a.code: a
    for a in (
        Action("u", "U", numbered=True),
        Action("v", "V", numbered=True),
        Action("r", None, emoji="🔄"),
        Action("c", "Cancel", style=discord.ButtonStyle.danger),
        Action("vs", "Vary (Subtle)"),
        Action("vx", "Vary (Strong)"),
        Action("up", "Upscale (2x)"),
        Action("fav", None, emoji="❤️"),
        Action("del", None, emoji="🗑️"),
    )
}

STALE_BUTTON = "This button no longer works; run the command again."

ButtonHandler = Callable[[discord.Interaction[Any], str, int | None], Awaitable[None]]


class JobButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=(rf"atelier:(?P<action>{'|'.join(ACTIONS)}):(?P<job>{JOB_ID_PATTERN})"
              r"(?::(?P<index>[1-4]))?"),
):
    """One button of a job's message: `atelier:u:k3f9x2ab:2` is `U2` of job `k3f9x2ab`."""

    def __init__(self, action: str, job_id: str, index: int | None = None,
                 row: int | None = None) -> None:
        spec = ACTIONS[action]
        label = spec.label
        if spec.numbered and label is not None:
            label = f"{label}{index}"
        custom_id = f"atelier:{action}:{job_id}" + (f":{index}" if index is not None else "")
        super().__init__(
            discord.ui.Button(label=label, emoji=spec.emoji, style=spec.style,
                              custom_id=custom_id, row=row)
        )
        self.action = action
        self.job_id = job_id
        self.index = index

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any],
        match: re.Match[str], /,
    ) -> JobButton:
        index = int(match["index"]) if match["index"] else None
        return cls(match["action"], match["job"], index)

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        bot: AtelierBot = interaction.client
        handler = bot.button_handlers.get(self.action)
        if ACTIONS[self.action].numbered and self.index is None:
            await interaction.response.send_message(STALE_BUTTON, ephemeral=True)
            return
        if handler is None:
            await interaction.response.send_message(
                "This button is not available right now.", ephemeral=True
            )
            return
        await answering_errors(interaction, handler(interaction, self.job_id, self.index),
                               f"button {self.custom_id}")


def _view(*buttons: JobButton) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for button in buttons:
        view.add_item(button)
    return view


def result_view(job_id: str, count: int) -> discord.ui.View:
    """`U1`–`U4` `🔄` on the first row, `V1`–`V4` on the second (as many as images)."""
    return _view(
        *(JobButton("u", job_id, i, row=0) for i in range(1, count + 1)),
        JobButton("r", job_id, row=0),
        *(JobButton("v", job_id, i, row=1) for i in range(1, count + 1)),
    )


def single_image_view(job_id: str, index: int) -> discord.ui.View:
    """`Vary (Subtle)` `Vary (Strong)` `Upscale (2x)` `❤️` `🗑️` for one picture."""
    return _view(*(JobButton(action, job_id, index, row=0)
                   for action in ("vs", "vx", "up", "fav", "del")))


def cancel_view(job_id: str) -> discord.ui.View:
    return _view(JobButton("c", job_id))
