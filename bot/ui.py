"""Atelier's buttons and menus, and the one way they are routed.

Every component is a persistent `DynamicItem` whose custom id carries its action and its state
(a job, an image number, a page…), so a press still works after a restart. Its callback hands
the press to the handler that the cog owning the feature registered for that action
(`ButtonRouter`); start-up checks that every action has one."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import discord

from bot.replies import answer_error, answering_errors

if TYPE_CHECKING:
    from bot.client import AtelierBot

log = logging.getLogger(__name__)

JOB_ID_PATTERN = r"[a-z][a-z0-9]{7}"
STALE_BUTTON = "This button no longer works; run the command again."


class Action(StrEnum):
    """What a component does; the value is how its custom id names it."""

    SINGLE = "u"  # U<n>
    VARIATION = "v"  # V<n>
    REROLL = "r"  # 🔄
    CANCEL = "c"
    VARY_SUBTLE = "vs"
    VARY_STRONG = "vx"
    VARY_REGION = "vr"
    ZOOM_2 = "z2"
    ZOOM_15 = "z15"
    ZOOM_CUSTOM = "zc"
    SQUARE = "sq"
    PAN_LEFT = "pl"
    PAN_RIGHT = "pr"
    PAN_UP = "pu"
    PAN_DOWN = "pd"
    UPSCALE = "up"
    ENHANCE = "en"  # a draft's picture at full quality
    FAVOURITE = "fav"
    DELETE = "del"
    REGION_CELLS = "cells"  # the Vary (Region) panel's `Cells to redraw`
    REDRAW = "rd"  # the Vary (Region) panel's `Redraw`
    SUGGESTION = "d"  # /describe's 1–4: /imagine that suggestion
    DESCRIBE_AGAIN = "dr"  # /describe's 🔄: new suggestions
    HISTORY_PAGE = "h"  # /history's ◀ ▶
    HISTORY_OPEN = "open"  # /history's Open…
    SETTINGS_CHOICE = "set"  # a field's menu on the /settings panel
    SETTINGS_BUTTON = "setb"  # the /settings panel's buttons


@dataclass(frozen=True)
class Press:
    """One press of a component: the state its custom id carries, and what was picked in a
    menu."""

    job_id: str | None = None
    index: int | None = None  # an image number, from 1
    detail: str | None = None  # more state of the action's own (cells, a page and filters)
    values: tuple[str, ...] = ()  # a menu's picked values


Handler = Callable[[discord.Interaction[Any], Press], Awaitable[None]]


class ButtonRouter:
    """Which handler serves each action, registered by the cogs at load time."""

    def __init__(self) -> None:
        self._handlers: dict[Action, Handler] = {}

    def register(self, handlers: dict[Action, Handler]) -> None:
        for action, handler in handlers.items():
            if action in self._handlers:
                raise RuntimeError(f"two handlers for the {action.name} button")
            self._handlers[action] = handler

    def unregister(self, *actions: Action) -> None:
        for action in actions:
            self._handlers.pop(action, None)

    def missing(self) -> list[Action]:
        """Actions no loaded feature handles (checked at start-up)."""
        return [action for action in Action if action not in self._handlers]

    async def dispatch(self, interaction: discord.Interaction[Any], action: Action,
                       press: Press) -> None:
        """Run what `action` does; an unexpected failure is answered privately and logged."""
        handler = self._handlers.get(action)
        if handler is None:
            await answer_error(interaction, "This button is not available right now.")
            return
        await answering_errors(interaction, handler(interaction, press),
                               f"the {action.name} button")


async def dispatch(interaction: discord.Interaction[Any], action: Action, press: Press) -> None:
    bot: AtelierBot = interaction.client
    await bot.buttons.dispatch(interaction, action, press)


@dataclass(frozen=True)
class Look:
    """How a job's button looks."""

    label: str | None
    emoji: str | None = None
    style: discord.ButtonStyle = discord.ButtonStyle.secondary
    numbered: bool = False  # the label gets the image number, `U` → `U2`


LOOKS: dict[Action, Look] = {
    Action.SINGLE: Look("U", numbered=True),
    Action.VARIATION: Look("V", numbered=True),
    Action.REROLL: Look(None, emoji="🔄"),
    Action.CANCEL: Look("Cancel", style=discord.ButtonStyle.danger),
    Action.VARY_SUBTLE: Look("Vary (Subtle)"),
    Action.VARY_STRONG: Look("Vary (Strong)"),
    Action.VARY_REGION: Look("Vary (Region)"),
    Action.ZOOM_2: Look("Zoom Out 2x"),
    Action.ZOOM_15: Look("Zoom Out 1.5x"),
    Action.ZOOM_CUSTOM: Look("Custom Zoom"),
    Action.SQUARE: Look("Make Square"),
    Action.PAN_LEFT: Look(None, emoji="⬅️"),
    Action.PAN_RIGHT: Look(None, emoji="➡️"),
    Action.PAN_UP: Look(None, emoji="⬆️"),
    Action.PAN_DOWN: Look(None, emoji="⬇️"),
    Action.UPSCALE: Look("Upscale (2x)"),
    Action.ENHANCE: Look("Enhance", style=discord.ButtonStyle.primary),
    Action.FAVOURITE: Look(None, emoji="❤️"),
    Action.DELETE: Look(None, emoji="🗑️"),
    Action.SUGGESTION: Look("", numbered=True),
    Action.DESCRIBE_AGAIN: Look(None, emoji="🔄"),
}


class JobButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=(rf"atelier:(?P<action>{'|'.join(action.value for action in LOOKS)})"
              rf":(?P<job>{JOB_ID_PATTERN})(?::(?P<index>[1-4]))?"),
):
    """One button of a job's message: `atelier:u:k3f9x2ab:2` is `U2` of job `k3f9x2ab`."""

    def __init__(self, action: Action, job_id: str, index: int | None = None,
                 row: int | None = None) -> None:
        look = LOOKS[action]
        label = look.label
        if look.numbered and label is not None:
            label = f"{label}{index}"
        custom_id = f"atelier:{action}:{job_id}" + (f":{index}" if index is not None else "")
        super().__init__(discord.ui.Button(label=label, emoji=look.emoji, style=look.style,
                                           custom_id=custom_id, row=row))
        self.action = action
        self.job_id = job_id
        self.index = index

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any],
        match: re.Match[str], /,
    ) -> JobButton:
        index = int(match["index"]) if match["index"] else None
        return cls(Action(match["action"]), match["job"], index)

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        if LOOKS[self.action].numbered and self.index is None:
            await interaction.response.send_message(STALE_BUTTON, ephemeral=True)
            return
        await dispatch(interaction, self.action, Press(self.job_id, self.index))


def _view(*items: discord.ui.Item[Any]) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for item in items:
        view.add_item(item)
    return view


def result_view(job_id: str, count: int, draft: bool = False) -> discord.ui.View:
    """`U1`–`U4` `🔄` on the first row, `V1`–`V4` on the second (as many as images); a draft's
    single picture (`count: 1`) also gets `Enhance` (SPEC §3.2)."""
    return _view(
        *(JobButton(Action.SINGLE, job_id, i, row=0) for i in range(1, count + 1)),
        JobButton(Action.REROLL, job_id, row=0),
        *((JobButton(Action.ENHANCE, job_id, 1, row=0),) if draft and count == 1 else ()),
        *(JobButton(Action.VARIATION, job_id, i, row=1) for i in range(1, count + 1)),
    )


def single_image_view(job_id: str, index: int, square: bool = True,
                      draft: bool = False) -> discord.ui.View:
    """The buttons of one picture (SPEC §3): `Vary (Subtle)` `Vary (Strong)` `Vary (Region)` —
    `Zoom Out 2x` `Zoom Out 1.5x` `Custom Zoom` `Make Square` (only when it is not square) —
    `⬅️` `➡️` `⬆️` `⬇️` — `Upscale (2x)` `❤️` `🗑️`; a draft's picture has `Enhance` before
    `Upscale (2x)`."""
    rows = [
        (Action.VARY_SUBTLE, Action.VARY_STRONG, Action.VARY_REGION),
        (Action.ZOOM_2, Action.ZOOM_15, Action.ZOOM_CUSTOM,
         *(() if square else (Action.SQUARE,))),
        (Action.PAN_LEFT, Action.PAN_RIGHT, Action.PAN_UP, Action.PAN_DOWN),
        (*((Action.ENHANCE,) if draft else ()), Action.UPSCALE, Action.FAVOURITE, Action.DELETE),
    ]
    return _view(*(JobButton(action, job_id, index, row=row)
                   for row, actions in enumerate(rows) for action in actions))


def describe_view(job_id: str, count: int = 4) -> discord.ui.View:
    """`/describe`'s `1`–`4` (one for each suggestion) and `🔄`."""
    return _view(*(JobButton(Action.SUGGESTION, job_id, i, row=0) for i in range(1, count + 1)),
                 JobButton(Action.DESCRIBE_AGAIN, job_id, row=0))


def cancel_view(job_id: str) -> discord.ui.View:
    return _view(JobButton(Action.CANCEL, job_id))


# ---- Vary (Region)'s panel ----------------------------------------------------------------------

CELL_NAMES = ("top left", "top", "top right", "left", "middle", "right", "bottom left", "bottom",
              "bottom right")


def cells_text(cells: frozenset[int]) -> str:
    """`159`: chosen cells as a Redraw button's custom id carries them (`-` for none)."""
    return "".join(str(cell) for cell in sorted(cells)) or "-"


def parse_cells(text: str | None) -> frozenset[int]:
    return frozenset(int(digit) for digit in text or "" if digit in "123456789")


class RegionMenu(
    discord.ui.DynamicItem[discord.ui.Select[Any]],
    template=rf"atelier:{Action.REGION_CELLS}:(?P<job>{JOB_ID_PATTERN}):(?P<index>[1-4])",
):
    """`Cells to redraw` on Vary (Region)'s panel: any of cells 1–9."""

    def __init__(self, job_id: str, index: int, chosen: frozenset[int] = frozenset()) -> None:
        options = [discord.SelectOption(label=f"{cell} · {name}", value=str(cell),
                                        default=cell in chosen)
                   for cell, name in enumerate(CELL_NAMES, start=1)]
        super().__init__(discord.ui.Select(
            custom_id=f"atelier:{Action.REGION_CELLS}:{job_id}:{index}",
            placeholder="Cells to redraw", min_values=0, max_values=9, options=options, row=0))
        self.job_id = job_id
        self.index = index

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any],
        match: re.Match[str], /,
    ) -> RegionMenu:
        return cls(match["job"], int(match["index"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await dispatch(interaction, Action.REGION_CELLS,
                       Press(self.job_id, self.index, values=tuple(self.item.values)))


class RedrawButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=(rf"atelier:{Action.REDRAW}:(?P<job>{JOB_ID_PATTERN}):(?P<index>[1-4])"
              r":(?P<cells>[1-9]{1,9}|-)"),
):
    """`Redraw` on Vary (Region)'s panel, carrying the cells chosen so far."""

    def __init__(self, job_id: str, index: int, cells: frozenset[int] = frozenset()) -> None:
        super().__init__(discord.ui.Button(
            label="Redraw", style=discord.ButtonStyle.primary, row=1,
            custom_id=f"atelier:{Action.REDRAW}:{job_id}:{index}:{cells_text(cells)}"))
        self.job_id = job_id
        self.index = index
        self.cells = cells

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any],
        match: re.Match[str], /,
    ) -> RedrawButton:
        return cls(match["job"], int(match["index"]), parse_cells(match["cells"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await dispatch(interaction, Action.REDRAW,
                       Press(self.job_id, self.index, detail=cells_text(self.cells)))


def region_view(job_id: str, index: int, chosen: frozenset[int]) -> discord.ui.View:
    """Vary (Region)'s panel: the cells menu and `Redraw`."""
    return _view(RegionMenu(job_id, index, chosen), RedrawButton(job_id, index, chosen))


DYNAMIC_ITEMS = (JobButton, RegionMenu, RedrawButton)
