"""`/settings`: a private panel of the caller's defaults for `/imagine`, saved as they change.

The panel's selects and buttons are `DynamicItem`s that keep no state of their own: each press
reads the caller's settings from the database, changes one thing, saves, and redraws the panel,
so an old panel keeps working after a restart. It is a components-v2 layout because six selects
and a row of buttons do not fit in the five rows of a classic message."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot import limits
from bot.catalogue import Catalogue
from bot.engine.models import Family
from bot.engine.samplers import SAMPLERS
from bot.options import DEFAULT_COUNT
from bot.prompt import PromptError, check_chunks, chunks_at_least
from bot.replies import OUR_FAULT, answer_error
from bot.ui import Action, Press, dispatch
from storage import UserSettings

if TYPE_CHECKING:
    from bot.client import AtelierBot

log = logging.getLogger(__name__)

Interaction = discord.Interaction["AtelierBot"]

# The hyphen keeps these ids from ever reading as a job button's `atelier:<action>:<job id>`, as an
# eight-letter field name like `guidance` could under a looser template.
PREFIX = "atelier:user-settings:"
FIELDS = ("aspect", "count", "steps", "guidance", "model", "sampler")
DEFAULT = "default"  # the select value that clears a field
STEP_CHOICES = (10, 20, 30, 40, 50)
GUIDANCE_CHOICES = (3.0, 5.0, 7.0, 9.0, 12.0)
OPTIONS_MAX = 25  # Discord's limit on a select's options


def _number(value: float) -> str:
    return f"{value:g}"


def family_of(settings: UserSettings, catalogue: Catalogue) -> Family:
    """The family whose defaults apply: the chosen model's, or the default model's."""
    try:
        return catalogue.get(settings.model).family
    except PromptError:  # a model no longer configured
        return catalogue.default.family


def parse_steps(text: str) -> int | None:
    """Steps as typed in the modal; empty means the model's default."""
    text = text.strip()
    if not text:
        return None
    if not re.fullmatch(r"\d+", text) or not limits.STEPS_MIN <= int(text) <= limits.STEPS_MAX:
        raise PromptError(f"`steps` must be a whole number from {limits.STEPS_MIN} to "
                          f"{limits.STEPS_MAX}, got `{text[:20]}`")
    return int(text)


def parse_guidance(text: str) -> float | None:
    """A CFG scale as typed in the modal; empty means the model's default."""
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if math.isnan(value) or not limits.GUIDANCE_MIN <= value <= limits.GUIDANCE_MAX:
        raise PromptError(f"`guidance` must be from {limits.GUIDANCE_MIN:g} to "
                          f"{limits.GUIDANCE_MAX:g}, got `{text[:20]}`")
    return value


def parse_choice(field: str, value: str, catalogue: Catalogue) -> Any:
    """The setting a select's value stands for (None for the default). Values come from options
    the bot made, but a client can send anything, so they are checked like typed input."""
    if value == DEFAULT:
        return None
    if field == "aspect":
        if value not in limits.ASPECT_CHOICES:
            raise PromptError(f"Unknown aspect `{value}`. Accepted: "
                              f"{', '.join(limits.ASPECT_CHOICES)}")
        return value
    if field == "count":
        if value not in {str(n) for n in range(limits.COUNT_MIN, limits.COUNT_MAX + 1)}:
            raise PromptError(f"`count` must be from {limits.COUNT_MIN} to {limits.COUNT_MAX}")
        return int(value)
    if field == "steps":
        return parse_steps(value)
    if field == "guidance":
        return parse_guidance(value)
    if field == "model":
        return catalogue.get(value).name
    if field == "sampler":
        if value not in SAMPLERS:
            raise PromptError(f"Unknown sampler `{value}`. Accepted: {', '.join(SAMPLERS)}")
        return value
    raise PromptError(f"Unknown setting `{field}`")


def _options(label: str, current: str | None, default: str,
             choices: Sequence[tuple[str, str]]) -> list[discord.SelectOption]:
    """`label: model default (30)` first, then each (value, shown) choice; the current value is
    selected, and added if it is not among the choices (a value typed in the modal)."""
    if current is not None and current not in {value for value, _ in choices}:
        choices = [*choices, (current, current)]
    choices = choices[:OPTIONS_MAX - 1]
    return [
        discord.SelectOption(label=f"{label}: {default}", value=DEFAULT, default=current is None),
        *(discord.SelectOption(label=f"{label}: {shown}"[:100], value=value,
                               default=value == current)
          for value, shown in choices),
    ]


def select_options(settings: UserSettings,
                   catalogue: Catalogue) -> dict[str, list[discord.SelectOption]]:
    family = family_of(settings, catalogue)
    steps = sorted({*STEP_CHOICES, *([settings.steps] if settings.steps else [])})
    guidance = sorted({*GUIDANCE_CHOICES,
                       *([settings.guidance] if settings.guidance is not None else [])})
    return {
        "aspect": _options("Aspect ratio", settings.aspect, "default (1:1)",
                           [(a, a) for a in limits.ASPECT_CHOICES]),
        "count": _options("Images", None if settings.count is None else str(settings.count),
                          f"default ({DEFAULT_COUNT})",
                          [(str(n), str(n)) for n in range(limits.COUNT_MIN,
                                                           limits.COUNT_MAX + 1)]),
        "steps": _options("Steps", None if settings.steps is None else str(settings.steps),
                          f"model default ({family.steps})",
                          [(str(n), str(n)) for n in steps]),
        "guidance": _options("CFG scale",
                             None if settings.guidance is None else _number(settings.guidance),
                             f"model default ({_number(family.guidance)})",
                             [(_number(g), _number(g)) for g in guidance]),
        "model": _options("Model", settings.model, f"default ({catalogue.default.name})",
                          [(spec.name, f"{spec.name} ({spec.family.label})")
                           for spec in catalogue]),
        "sampler": _options("Sampler", settings.sampler, f"model default ({family.sampler})",
                            [(name, f"{name} ({s.label})") for name, s in SAMPLERS.items()]),
    }


def summary_text(settings: UserSettings, catalogue: Catalogue) -> str:
    family = family_of(settings, catalogue)

    def shown(value: object, default: str) -> str:
        return default if value is None else str(value)

    negative = "none"
    if settings.negative:
        negative = discord.utils.escape_mentions(discord.utils.escape_markdown(settings.negative))
    model = f"default ({catalogue.default.name})"
    if settings.model is not None:
        model = settings.model if settings.model in catalogue.names() else (
            f"{settings.model} (no longer available: the default is used)")
    guidance = None if settings.guidance is None else _number(settings.guidance)
    return "\n".join([
        "**Your /imagine defaults**",
        f"Aspect ratio: {shown(settings.aspect, 'default (1:1)')}",
        f"Images: {shown(settings.count, f'default ({DEFAULT_COUNT})')}",
        f"Steps: {shown(settings.steps, f'model default ({family.steps})')}",
        f"CFG scale: {shown(guidance, f'model default ({_number(family.guidance)})')}",
        f"Model: {model}",
        f"Sampler: {shown(settings.sampler, f'model default ({family.sampler})')}",
        f"Negative prompt: {negative}",
        f"Remix: {'on' if settings.remix else 'off'}",
        "-# Options and --parameters you give `/imagine` still win over these.",
    ])


def settings_panel(settings: UserSettings, catalogue: Catalogue) -> discord.ui.LayoutView:
    """The panel showing `settings`, with a select per field and the buttons below."""
    options = select_options(settings, catalogue)
    # DynamicItem is typed as an item of either kind of view, which ActionRow's type variable
    # (LayoutView only) does not accept, though discord.py supports it at run time.
    rows = [discord.ui.ActionRow(SettingSelect(field, options[field]))  # type: ignore[type-var]
            for field in FIELDS]
    buttons = discord.ui.ActionRow(  # type: ignore[type-var]
        SettingButton("edit"), SettingButton("remix", remix=settings.remix), SettingButton("reset"))
    view = discord.ui.LayoutView(timeout=None)
    view.add_item(discord.ui.Container(
        discord.ui.TextDisplay(summary_text(settings, catalogue)), *rows, buttons))
    return view


async def save_and_show(interaction: Interaction, settings: UserSettings) -> None:
    """Save `settings` and redraw the panel the interaction came from."""
    await interaction.client.repo.save_settings(settings)
    await interaction.response.edit_message(
        view=settings_panel(settings, interaction.client.catalogue))


class DefaultsModal(discord.ui.Modal):
    """The settings typed as text: the negative prompt, and any steps or CFG scale."""

    negative: discord.ui.TextInput[DefaultsModal] = discord.ui.TextInput(
        label="Negative prompt", custom_id="negative", style=discord.TextStyle.paragraph,
        required=False, max_length=limits.PROMPT_MAX)
    steps: discord.ui.TextInput[DefaultsModal] = discord.ui.TextInput(
        label="Steps (1–150; empty: model default)", custom_id="steps", required=False,
        max_length=3)
    guidance: discord.ui.TextInput[DefaultsModal] = discord.ui.TextInput(
        label="CFG scale (0–30; empty: model default)", custom_id="guidance", required=False,
        max_length=6)

    def __init__(self, settings: UserSettings) -> None:
        super().__init__(title="Your /imagine defaults", timeout=15 * 60,
                         custom_id=f"{PREFIX}modal")
        self.negative.default = settings.negative
        self.steps.default = None if settings.steps is None else str(settings.steps)
        self.guidance.default = None if settings.guidance is None else _number(settings.guidance)

    async def on_submit(self, interaction: Interaction) -> None:  # type: ignore[override]
        negative = self.negative.value.strip() or None
        try:
            steps = parse_steps(self.steps.value)
            guidance = parse_guidance(self.guidance.value)
            check_chunks("The negative prompt", chunks_at_least(negative or ""), parts=False)
        except PromptError as error:
            await answer_error(interaction, f"❌ {error}")
            return
        current = await interaction.client.repo.settings(interaction.user.id)
        await save_and_show(interaction, replace(
            current, negative=negative, steps=steps, guidance=guidance))

    async def on_error(self, interaction: Interaction,  # type: ignore[override]
                       error: Exception) -> None:
        log.error("the /settings modal of %s failed", interaction.user, exc_info=error)
        await answer_error(interaction, OUR_FAULT)


class SettingSelect(
    discord.ui.DynamicItem[discord.ui.Select[Any]],
    template=rf"{PREFIX}(?P<field>{'|'.join(FIELDS)})",
):
    """One field's select: `atelier:user-settings:aspect`."""

    def __init__(self, field: str, options: list[discord.SelectOption] | None = None) -> None:
        super().__init__(discord.ui.Select(custom_id=f"{PREFIX}{field}", options=options or []))
        self.field = field

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any],
        match: re.Match[str], /,
    ) -> SettingSelect:
        return cls(match["field"])

    async def callback(self, interaction: Interaction) -> None:  # type: ignore[override]
        await dispatch(interaction, Action.SETTINGS_CHOICE,
                       Press(detail=self.field, values=tuple(self.item.values)))


class SettingButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=rf"{PREFIX}(?P<action>edit|remix|reset)",
):
    """`Negative prompt, steps, CFG…` (a modal), `Remix: on/off` and `Reset`."""

    def __init__(self, action: str, remix: bool = False) -> None:
        if action == "edit":
            label, style = "Negative prompt, steps, CFG…", discord.ButtonStyle.primary
        elif action == "remix":
            label = f"Remix: {'on' if remix else 'off'}"
            style = discord.ButtonStyle.success if remix else discord.ButtonStyle.secondary
        else:
            label, style = "Reset", discord.ButtonStyle.danger
        super().__init__(discord.ui.Button(label=label, style=style,
                                           custom_id=f"{PREFIX}{action}"))
        self.action = action

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any],
        match: re.Match[str], /,
    ) -> SettingButton:
        return cls(match["action"])

    async def callback(self, interaction: Interaction) -> None:  # type: ignore[override]
        await dispatch(interaction, Action.SETTINGS_BUTTON, Press(detail=self.action))


class Settings(commands.Cog):
    def __init__(self, bot: AtelierBot) -> None:
        self.bot = bot
        bot.buttons.register({Action.SETTINGS_CHOICE: self.on_choice,
                              Action.SETTINGS_BUTTON: self.on_button})

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(SettingSelect, SettingButton)

    async def cog_unload(self) -> None:
        self.bot.buttons.unregister(Action.SETTINGS_CHOICE, Action.SETTINGS_BUTTON)
        self.bot.remove_dynamic_items(SettingSelect, SettingButton)

    async def on_choice(self, interaction: Interaction, press: Press) -> None:
        """A field's menu: save what was picked and redraw the panel."""
        field = press.detail or ""
        if field not in FIELDS or not press.values:
            await answer_error(interaction, "This menu no longer works; run `/settings` again.")
            return
        try:
            value = parse_choice(field, press.values[0], self.bot.catalogue)
        except PromptError as error:
            await answer_error(interaction, f"❌ {error}")
            return
        current = await self.bot.repo.settings(interaction.user.id)
        await save_and_show(interaction, replace(current, **{field: value}))

    async def on_button(self, interaction: Interaction, press: Press) -> None:
        """`Negative prompt, steps, CFG…` (a form), `Remix: on/off` and `Reset`."""
        repo = self.bot.repo
        user_id = interaction.user.id
        if press.detail == "reset":
            await repo.reset_settings(user_id)
            await interaction.response.edit_message(
                view=settings_panel(UserSettings(user_id), self.bot.catalogue))
            return
        current = await repo.settings(user_id)
        if press.detail == "remix":
            await save_and_show(interaction, replace(current, remix=not current.remix))
        else:
            await interaction.response.send_modal(DefaultsModal(current))

    @app_commands.command(name="settings")
    async def show_settings(self, interaction: Interaction) -> None:
        """Your defaults for /imagine: aspect, count, steps, CFG, model, negative prompt, remix."""
        current = await self.bot.repo.settings(interaction.user.id)
        await interaction.response.send_message(
            view=settings_panel(current, self.bot.catalogue), ephemeral=True)


async def setup(bot: AtelierBot) -> None:
    await bot.add_cog(Settings(bot))
