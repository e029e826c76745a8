"""`/settings` end to end: a private panel whose every change is saved and drives `/imagine`."""

from __future__ import annotations

from typing import Any

import pytest

from tests.double import InteractionHandle, Message
from tests.double.models import walk_components
from tests.e2e.conftest import Atelier, button, finished, image_size, job_id_of, rows

pytestmark = pytest.mark.e2e

PREFIX = "atelier:user-settings:"


def panel_text(message: Message) -> str:
    """What the panel says (its text displays)."""
    return "\n".join(c["content"] for c in walk_components(message.components)
                     if c.get("type") == 10)


def chosen(message: Message, field: str) -> list[str]:
    """The labels of the options shown as selected in the select of `field`."""
    [select] = [s for s in message.selects if s["custom_id"] == PREFIX + field]
    return [option["label"] for option in select["options"] if option.get("default")]


def saved(atelier: Atelier, user_id: int) -> dict[str, Any] | None:
    found = rows(atelier, "SELECT * FROM user_settings WHERE user_id = ?", user_id)
    return dict(found[0]) if found else None


async def open_panel(atelier: Atelier, user: Any = None) -> Message:
    handle = await atelier.double.slash("settings", user=user or atelier.double.alice)
    response = await handle.response()
    assert response.type == 4 and response.ephemeral
    panel = await handle.original()
    assert panel.ephemeral
    return panel


async def edited(handle: InteractionHandle, panel: Message) -> Message:
    """The panel after `handle` updated it in place (no new message)."""
    response = await handle.response()
    assert response.type == 7, response
    assert await handle.original() is panel
    return panel


async def test_settings_shows_the_defaults_privately(atelier: Atelier) -> None:
    panel = await open_panel(atelier)
    text = panel_text(panel)
    for line in ("Aspect ratio: default (1:1)", "Images: default (4)",
                 "Steps: model default (30)", "CFG scale: model default (7)",
                 "Model: default (tiny)", "Sampler: model default (euler)",
                 "Negative prompt: none", "Remix: off"):
        assert line in text
    assert [s["custom_id"] for s in panel.selects] == [
        PREFIX + f for f in ("aspect", "count", "steps", "guidance", "model", "sampler")]
    assert chosen(panel, "aspect") == ["Aspect ratio: default (1:1)"]
    assert [o["value"] for o in panel.selects[0]["options"]] == [
        "default", "1:1", "4:3", "3:4", "3:2", "2:3", "16:9", "9:16", "21:9"]
    assert panel.button_labels == [["Negative prompt, steps, CFG…", "Remix: off", "Reset"]]
    assert saved(atelier, atelier.double.alice.id) is None  # looking changes nothing


async def test_selects_save_at_once_and_drive_imagine(atelier: Atelier) -> None:
    alice = atelier.double.alice
    panel = await open_panel(atelier)

    await edited(await atelier.double.select(panel, PREFIX + "aspect", ["16:9"]), panel)
    assert "Aspect ratio: 16:9" in panel_text(panel)
    assert chosen(panel, "aspect") == ["Aspect ratio: 16:9"]
    assert saved(atelier, alice.id)["aspect"] == "16:9"  # type: ignore[index]

    await edited(await atelier.double.select(panel, PREFIX + "count", ["1"]), panel)
    await edited(await atelier.double.select(panel, PREFIX + "steps", ["10"]), panel)
    await edited(await atelier.double.select(panel, PREFIX + "guidance", ["5"]), panel)
    await edited(await atelier.double.select(panel, PREFIX + "sampler", ["euler_a"]), panel)
    await edited(await atelier.double.select(panel, PREFIX + "model", ["tiny"]), panel)
    row = saved(atelier, alice.id)
    assert row is not None
    assert (row["aspect"], row["count"], row["steps"], row["guidance"], row["sampler"],
            row["model"], row["remix"]) == ("16:9", 1, 10, 5.0, "euler_a", "tiny", 0)
    text = panel_text(panel)
    for line in ("Images: 1", "Steps: 10", "CFG scale: 5", "Sampler: euler_a", "Model: tiny"):
        assert line in text
    assert all(message.ephemeral for message in atelier.double.messages)

    # the next /imagine uses them: one 16:9 picture on the tiny model
    result = await finished(await atelier.imagine("a fox"))
    assert result.button_labels == [["U1", "🔄"], ["V1"]]
    assert image_size(result.attachment_bytes()) == (168, 96)
    [job] = rows(atelier, "SELECT * FROM jobs WHERE id = ?", job_id_of(result))
    assert (job["width"], job["height"], job["count"], job["steps"], job["guidance"],
            job["sampler"]) == (168, 96, 1, 10, 5.0, "euler_a")

    # what the user types still wins
    square = await finished(await atelier.imagine("a fox --ar 1:1 --steps 12"))
    assert image_size(square.attachment_bytes()) == (128, 128)
    [job] = rows(atelier, "SELECT * FROM jobs WHERE id = ?", job_id_of(square))
    assert (job["count"], job["steps"]) == (1, 12)

    # other users keep the model's defaults
    bobs = await finished(await atelier.imagine("a fox", user=atelier.double.bob))
    assert image_size(bobs.attachment_bytes()) == (256, 256)  # a 2×2 grid of 128²


async def test_model_default_clears_a_field(atelier: Atelier) -> None:
    alice = atelier.double.alice
    panel = await open_panel(atelier)
    await edited(await atelier.double.select(panel, PREFIX + "steps", ["40"]), panel)
    assert saved(atelier, alice.id)["steps"] == 40  # type: ignore[index]
    await edited(await atelier.double.select(panel, PREFIX + "steps", ["default"]), panel)
    assert saved(atelier, alice.id)["steps"] is None  # type: ignore[index]
    assert "Steps: model default (30)" in panel_text(panel)
    assert chosen(panel, "steps") == ["Steps: model default (30)"]


async def test_modal_sets_the_negative_prompt_and_typed_values(atelier: Atelier) -> None:
    alice = atelier.double.alice
    panel = await open_panel(atelier)
    click = await atelier.double.click(panel, button(panel, "Negative prompt, steps, CFG…"))
    assert (await click.response()).type == 9
    assert click.modal is not None
    submitted = await atelier.double.submit_modal(
        click.modal["custom_id"], {"negative": "blurry, text", "steps": "37", "guidance": "6.5"})
    await edited(submitted, panel)
    row = saved(atelier, alice.id)
    assert row is not None
    assert (row["negative"], row["steps"], row["guidance"]) == ("blurry, text", 37, 6.5)
    text = panel_text(panel)
    assert "Negative prompt: blurry, text" in text and "Steps: 37" in text
    assert chosen(panel, "steps") == ["Steps: 37"]  # a typed value joins the choices
    assert "CFG scale: 6.5" in text

    result = await finished(await atelier.imagine("a fox --n 1 --no people"))
    [job] = rows(atelier, "SELECT * FROM jobs WHERE id = ?", job_id_of(result))
    assert (job["negative"], job["steps"], job["guidance"]) == ("blurry, text, people", 37, 6.5)

    # the modal opens with the saved values; emptied fields go back to the model's default
    again = await atelier.double.click(panel, button(panel, "Negative prompt, steps, CFG…"))
    await again.response()
    assert again.modal is not None
    values = {c["custom_id"]: c.get("value") for c in walk_components(again.modal["components"])
              if c.get("type") == 4}
    assert values == {"negative": "blurry, text", "steps": "37", "guidance": "6.5"}
    cleared = await atelier.double.submit_modal(
        again.modal["custom_id"], {"negative": "", "steps": "", "guidance": ""})
    await edited(cleared, panel)
    row = saved(atelier, alice.id)
    assert row is not None
    assert (row["negative"], row["steps"], row["guidance"]) == (None, None, None)


async def test_modal_refuses_values_out_of_range(atelier: Atelier) -> None:
    panel = await open_panel(atelier)
    click = await atelier.double.click(panel, button(panel, "Negative prompt, steps, CFG…"))
    await click.response()
    assert click.modal is not None
    before = panel.edits
    submitted = await atelier.double.submit_modal(
        click.modal["custom_id"], {"steps": "500", "guidance": "7"})
    response = await submitted.response()
    assert response.type == 4 and response.ephemeral
    assert "`steps` must be a whole number from 1 to 150" in response.data["content"]
    assert panel.edits == before
    assert saved(atelier, atelier.double.alice.id) is None
    again = await atelier.double.click(panel, button(panel, "Negative prompt, steps, CFG…"))
    await again.response()
    assert again.modal is not None
    breaks = await atelier.double.submit_modal(
        again.modal["custom_id"], {"negative": "blurry BREAK " * 9})
    response = await breaks.response()
    assert response.ephemeral and response.data["content"] == (
        "❌ The negative prompt needs at least 9 chunks of 75 tokens; at most 8 are allowed "
        "(each `BREAK` starts a new chunk)")
    assert panel.edits == before
    assert saved(atelier, atelier.double.alice.id) is None


async def test_remix_toggle_makes_variations_open_a_modal(atelier: Atelier) -> None:
    alice = atelier.double.alice
    grid = await finished(await atelier.imagine("a red fox --n 2"))
    panel = await open_panel(atelier)
    await edited(await atelier.double.click(panel, button(panel, "Remix: off")), panel)
    assert panel.button_labels == [["Negative prompt, steps, CFG…", "Remix: on", "Reset"]]
    assert "Remix: on" in panel_text(panel)
    assert saved(atelier, alice.id)["remix"] == 1  # type: ignore[index]

    remix = await atelier.double.click(grid, button(grid, "V1"))
    assert (await remix.response()).type == 9  # the remix modal

    await edited(await atelier.double.click(panel, button(panel, "Remix: on")), panel)
    assert saved(atelier, alice.id)["remix"] == 0  # type: ignore[index]
    direct = await atelier.double.click(grid, button(grid, "V1"))
    assert (await direct.response()).type == 5  # runs at once
    await finished(direct)


async def test_reset_goes_back_to_the_defaults(atelier: Atelier) -> None:
    alice = atelier.double.alice
    panel = await open_panel(atelier)
    await edited(await atelier.double.select(panel, PREFIX + "aspect", ["3:2"]), panel)
    await edited(await atelier.double.click(panel, button(panel, "Remix: off")), panel)
    assert saved(atelier, alice.id) is not None
    await edited(await atelier.double.click(panel, button(panel, "Reset")), panel)
    assert saved(atelier, alice.id) is None
    assert "Aspect ratio: default (1:1)" in panel_text(panel)
    assert "Remix: off" in panel_text(panel)


async def test_the_panel_works_after_a_restart(atelier: Atelier) -> None:
    panel = await open_panel(atelier)
    await atelier.restart()
    await edited(await atelier.double.select(panel, PREFIX + "count", ["2"]), panel)
    assert saved(atelier, atelier.double.alice.id)["count"] == 2  # type: ignore[index]
    assert "Images: 2" in panel_text(panel)
