"""Editing a picture end to end (SPEC §3.1): Zoom Out, Pan, Make Square, Custom Zoom, Vary (Region)
and `/imagine` with a mask, through the real bot, the Discord double and the tiny model.

Each result is checked as a user would see it: its size, the kept part equal to the picture
(each channel within 2 levels beyond 8 px from the redrawn area), the new part drawn anew, fresh
seeds, and the job's row."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from storage import UserSettings
from tests.double import Message
from tests.e2e.conftest import (
    Atelier,
    button,
    finished,
    image_size,
    job_id_of,
    pixels,
    png_info,
    posted,
    rows,
    withdrawn,
)

pytestmark = pytest.mark.e2e


def cells(grid: Message, count: int = 4) -> list[np.ndarray]:
    """The pictures of a result: its grid cut into cells (2×2), or the picture itself."""
    picture = pixels(grid.attachment_bytes())
    if count == 1:
        return [picture]
    height, width = picture.shape[0] // 2, picture.shape[1] // 2
    return [picture[(i // 2) * height:(i // 2 + 1) * height, (i % 2) * width:(i % 2 + 1) * width]
            for i in range(count)]


def far_from_box(shape: tuple[int, ...], box: tuple[int, int, int, int],
                 margin: int = 8) -> np.ndarray:
    """Pixels inside `box` (x, y, w, h) and farther than `margin` from its edge."""
    keep = np.zeros(shape[:2], dtype=bool)
    x, y, w, h = box
    keep[y + margin:y + h - margin, x + margin:x + w - margin] = True
    return keep


async def single(atelier: Atelier, prompt: str, number: int = 1) -> tuple[Message, np.ndarray]:
    """Image `number` of a new job, posted alone by its `U` button, and its pixels."""
    grid = await finished(await atelier.imagine(prompt))
    picture = await posted(await atelier.double.click(grid, button(grid, f"U{number}")))
    return picture, pixels(picture.attachment_bytes())


async def press(atelier: Atelier, message: Message, label: str, **kwargs: Any) -> Message:
    return await finished(await atelier.double.click(message, button(message, label), **kwargs))


def job_row(atelier: Atelier, message: Message) -> Any:
    [job] = rows(atelier, "SELECT * FROM jobs WHERE id = ?", job_id_of(message))
    return job


async def test_zoom_out_2x_keeps_the_picture_smaller_in_the_middle(atelier: Atelier) -> None:
    picture, original = await single(atelier, "a lighthouse --seed 42 --n 1")
    result = await press(atelier, picture, "Zoom Out 2x", user=atelier.double.bob)
    assert result.button_labels == [["U1", "U2", "U3", "U4", "🔄"], ["V1", "V2", "V3", "V4"]]
    assert image_size(result.attachment_bytes()) == (256, 256)  # four 128² pictures
    scaled = pixels(_png(Image.fromarray(original.astype(np.uint8)).resize(
        (64, 64), Image.Resampling.LANCZOS)))
    kept = far_from_box((128, 128), (32, 32, 64, 64))
    expected = np.zeros((128, 128, 3), dtype=np.int16)
    expected[32:96, 32:96] = scaled
    for cell in cells(result):
        assert np.abs(cell[kept] - expected[kept]).max() <= 2
        assert np.abs(cell[:24] - expected[:24]).mean() > 10  # the border is drawn anew
    job = job_row(atelier, result)
    assert (job["kind"], job["edit"], job["box"], job["mode"], job["count"]) == (
        "zoom", "zoom 2", "32,32,64,64", "inpaint", 4)
    parent = job_row(atelier, picture)
    assert job["parent_job"] == parent["id"] and job["parent_index"] == 1
    assert job["seed"] not in (42,)  # fresh seeds
    assert f"<@{atelier.double.bob.id}>" in result.content  # whoever pressed
    text = png_info(result.attachment_bytes())["parameters"]
    assert "Denoising strength: 1" in text and "Mask blur: 7" in text

    info = await atelier.double.context_menu("Image info", result, user=atelier.double.alice)
    embed = (await info.response()).data["embeds"][0]
    made_from = next(f["value"] for f in embed["fields"] if f["name"] == "Made from")
    assert made_from == f"Zoom Out 2x of job `{parent['id']}`, image 1"


async def test_pan_keeps_the_picture_at_full_size_and_grows_the_canvas(atelier: Atelier) -> None:
    picture, original = await single(atelier, "a harbour --ar 16:9 --seed 7 --n 1")
    assert original.shape == (96, 168, 3)
    right = await press(atelier, picture, "➡️")
    assert image_size(right.attachment_bytes()) == (512, 192)  # four 256×96 pictures
    kept = far_from_box((96, 256), (0, 0, 168, 96))
    for cell in cells(right):
        assert cell.shape == (96, 256, 3)
        assert np.abs(cell[:, :168][kept[:, :168]] - original[kept[:, :168]]).max() <= 2
        assert np.abs(cell[:, 180:].astype(int) - original[:, -1:].astype(int)).mean() > 5
    assert job_row(atelier, right)["box"] == "0,0,168,96"

    up = await press(atelier, picture, "⬆️")
    for cell in cells(up):
        assert cell.shape == (144, 168, 3)
        kept = far_from_box((144, 168), (0, 48, 168, 96))
        assert np.abs(cell[48:][kept[48:]] - original[kept[48:]]).max() <= 2


async def test_make_square_only_for_pictures_that_are_not(atelier: Atelier) -> None:
    wide, original = await single(atelier, "a valley --ar 16:9 --seed 3 --n 1")
    square = await press(atelier, wide, "Make Square")
    for cell in cells(square):
        assert cell.shape == (168, 168, 3)
        kept = far_from_box((168, 168), (0, 36, 168, 96))
        assert np.abs(cell[36:132][kept[36:132]] - original[kept[36:132]]).max() <= 2
    assert job_row(atelier, square)["edit"] == "square"

    square_picture, _ = await single(atelier, "a square --seed 4 --n 1")
    assert square_picture.button_labels[1] == ["Zoom Out 2x", "Zoom Out 1.5x", "Custom Zoom"]


async def test_pan_and_square_refuse_results_beyond_4_to_1(atelier: Atelier) -> None:
    wide, _ = await single(atelier, "a horizon --ar 4:1 --seed 5 --n 1")
    assert image_size(wide.attachment_bytes()) == (256, 64)
    refused = await (await atelier.double.click(wide, button(wide, "➡️"))).response()
    assert refused.ephemeral
    assert refused.data["content"] == (
        "❌ ➡️ is not possible: the result would be 384×64, beyond 4:1")
    assert rows(atelier, "SELECT count(*) FROM jobs WHERE kind = 'pan'")[0][0] == 0


async def test_reroll_of_an_edit_repeats_it_with_fresh_seeds(atelier: Atelier) -> None:
    picture, _ = await single(atelier, "a bridge --seed 11 --n 1")
    zoom = await press(atelier, picture, "Zoom Out 1.5x")
    again = await press(atelier, zoom, "🔄")
    first, second = job_row(atelier, zoom), job_row(atelier, again)
    for column in ("init_image", "box", "edit", "mode", "width", "height", "prompt"):
        assert first[column] == second[column], column
    assert second["kind"] == "reroll" and second["parent_job"] == first["id"]
    assert second["seed"] != first["seed"]
    assert np.abs(cells(zoom)[0].astype(int) - cells(again)[0].astype(int)).mean() > 5


async def test_custom_zoom_takes_its_factor_from_the_form(atelier: Atelier) -> None:
    picture, _ = await single(atelier, "a castle --seed 21 --n 1")
    click = await atelier.double.click(picture, button(picture, "Custom Zoom"))
    assert (await click.response()).type == 9  # a form, whatever the remix setting
    prompt = _inputs(click)["prompt"]["value"]
    assert prompt.startswith("a castle --steps 30") and prompt.endswith(" --zoom 2")
    bad = await atelier.double.submit_modal(click.modal["custom_id"],
                                            {"prompt": "a castle --zoom 3"})
    answer = await bad.response()
    assert answer.ephemeral and answer.data["content"] == "❌ `--zoom` must be from 1 to 2, got 3"
    assert rows(atelier, "SELECT count(*) FROM jobs WHERE kind = 'zoom'")[0][0] == 0
    click = await atelier.double.click(picture, button(picture, "Custom Zoom"))  # once more
    await click.response()
    good = await finished(await atelier.double.submit_modal(
        click.modal["custom_id"], {"prompt": "a castle at night --zoom 1.6"}))
    job = job_row(atelier, good)
    assert (job["edit"], job["box"], job["prompt"]) == ("zoom 1.6", "24,24,80,80",
                                                        "a castle at night")


async def test_remix_mode_opens_the_prompt_before_an_edit(atelier: Atelier) -> None:
    picture, _ = await single(atelier, "a forest --seed 8 --n 1")
    assert atelier.bot is not None
    await atelier.bot.repo.save_settings(UserSettings(atelier.double.alice.id, remix=True))
    click = await atelier.double.click(picture, button(picture, "Zoom Out 2x"))
    assert (await click.response()).type == 9
    result = await finished(await atelier.double.submit_modal(
        click.modal["custom_id"], {"prompt": "a forest in autumn"}))
    job = job_row(atelier, result)
    assert (job["kind"], job["prompt"], job["box"], job["count"]) == (
        "zoom", "a forest in autumn", "32,32,64,64", 4)


async def test_vary_region_redraws_the_chosen_cells_only(atelier: Atelier) -> None:
    picture, original = await single(atelier, "a garden --seed 31 --n 1")
    click = await atelier.double.click(picture, button(picture, "Vary (Region)"))
    panel = await posted(click)
    assert panel.ephemeral
    assert image_size(panel.attachment_bytes()) == (512, 512)
    [menu] = panel.selects
    assert menu["placeholder"] == "Cells to redraw"
    [[redraw]] = panel.buttons
    assert redraw.text == "Redraw"

    none = await (await atelier.double.click(panel, redraw.custom_id or "")).response()
    assert none.ephemeral and "Choose the cells to redraw first" in none.data["content"]

    chosen = await atelier.double.select(panel, menu["custom_id"], ["1", "2"])
    await chosen.response()
    await panel.wait_until(lambda m: "Cells chosen: 1, 2" in m.content)
    redraw_id = panel.buttons[0][0].custom_id or ""
    assert redraw_id.endswith(":12")
    form = await atelier.double.click(panel, redraw_id)
    assert (await form.response()).type == 9
    assert form.modal["title"] == "Vary (Region)"
    result = await finished(await atelier.double.submit_modal(
        form.modal["custom_id"], {"prompt": "a garden with a fountain"}))
    assert not result.ephemeral and result.content.startswith("**a garden with a fountain**")
    redrawn = np.zeros((128, 128), dtype=bool)
    redrawn[:42, :85] = True  # cells 1 and 2
    near = np.zeros((128, 128), dtype=bool)
    near[:42 + 8, :85 + 8] = True
    for cell in cells(result):
        assert np.abs(cell[~near] - original[~near]).max() <= 2
        assert np.abs(cell[redrawn] - original[redrawn]).mean() > 10
    job = job_row(atelier, result)
    assert (job["kind"], job["edit"], job["mode"]) == ("region", "region 1,2", "inpaint")
    assert job["mask_image"] is not None and atelier.bot is not None
    mask = atelier.bot.store.find(job["mask_image"])
    assert mask is not None
    assert (np.asarray(Image.open(mask)) > 0).sum() == 42 * 85


async def test_imagine_with_a_mask_redraws_its_white(atelier: Atelier) -> None:
    start = Image.new("RGB", (128, 128), (30, 90, 200))
    ImageDraw.Draw(start).ellipse((30, 30, 100, 100), fill=(240, 200, 30))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))  # the left half, scaled ×2 to the job's size
    handle = await atelier.double.slash(
        "imagine", {"prompt": "a sunset --seed 2", "count": 2, "strength": 1.0},
        user=atelier.double.alice,
        attachments={"image": ("start.png", _png(start), "image/png"),
                     "mask": ("mask.png", _png(mask), "image/png")})
    result = await finished(handle)
    original = pixels(_png(start))
    for cell in _pair(result):
        assert np.abs(cell[:, 72:] - original[:, 72:]).max() <= 2
        assert np.abs(cell[:, :56] - original[:, :56]).mean() > 10
    job = job_row(atelier, result)
    assert (job["kind"], job["mode"], job["edit"]) == ("imagine", "inpaint", "mask")


async def test_a_mask_without_an_image_or_with_nothing_white_is_refused(
        atelier: Atelier) -> None:
    mask = _png(Image.new("L", (64, 64), 255))
    alone = await atelier.double.slash("imagine", {"prompt": "a fox"}, user=atelier.double.alice,
                                       attachments={"mask": ("mask.png", mask, "image/png")})
    answer = await alone.response()
    assert answer.ephemeral and answer.data["content"] == (
        "❌ A `mask` needs an `image` to redraw: give both")
    black = _png(Image.new("L", (64, 64), 0))
    empty = await atelier.double.slash(
        "imagine", {"prompt": "a fox"}, user=atelier.double.alice,
        attachments={"image": ("start.png", _png(Image.new("RGB", (64, 64))), "image/png"),
                     "mask": ("mask.png", black, "image/png")})
    assert await withdrawn(atelier, empty) == (
        "❌ `mask.png` is all black: paint the area to redraw in white")
    assert rows(atelier, "SELECT count(*) FROM jobs")[0][0] == 0


def _pair(result: Message) -> list[np.ndarray]:
    picture = pixels(result.attachment_bytes())
    return [picture[:, :128], picture[:, 128:]]


def _png(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def _inputs(handle: Any) -> dict[str, Any]:
    return {c["custom_id"]: c for row in handle.modal["components"]
            for c in row.get("components", [row.get("component", {})])}


async def test_a_dedicated_inpainting_model_serves_the_edits(atelier: Atelier) -> None:
    await atelier.restart(sd_inpaint_models=(("default", "tiny-inpaint"),))
    picture, original = await single(atelier, "a meadow --seed 9 --n 1")
    result = await press(atelier, picture, "⬇️")
    assert atelier.bot is not None and atelier.bot.executor.worker is not None
    assert "tiny:inpaint@cpu" in atelier.bot.executor.worker.loaded_models()
    kept = far_from_box((192, 128), (0, 0, 128, 128))
    for cell in cells(result):
        assert cell.shape == (192, 128, 3)
        assert np.abs(cell[:128][kept[:128]] - original[kept[:128]]).max() <= 2
        assert np.abs(cell[140:].astype(int) - original[-1:].astype(int)).mean() > 5
