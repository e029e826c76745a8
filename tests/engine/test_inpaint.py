"""Inpainting on the tiny model: the picture on a larger canvas (Zoom Out, Pan, Make Square) or
under a mask (Vary (Region)), with the model itself and with a dedicated 9-channel inpainting
model. The kept area is the picture's own pixels; the new area is generated."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bot.engine.canvas import Box, Canvas, cells_mask, compose, outside_mask
from bot.engine.models import describe
from bot.engine.types import EngineError, GenerationRequest, GenerationResult, Mode
from bot.engine.worker import Worker, WorkerConfig
from tests.engine.helpers import make_request, pixels
from tests.models import ModelFiles


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def worker(tiny_model_dir: Path) -> Iterator[Worker]:
    """`tiny` inpaints through its own weights; `dedicated` is the same model with a 9-channel
    inpainting checkpoint (SD_INPAINT_MODELS)."""
    tiny = describe("tiny", "tiny")
    specs = (tiny, replace(tiny, name="dedicated", inpaint="tiny-inpaint"))
    yield Worker(WorkerConfig(models=specs, cache_dir=str(tiny_model_dir.parent), device="cpu",
                              models_loaded=4))


@pytest.fixture(scope="module")
def picture() -> Image.Image:
    """A picture with detail everywhere, so a kept pixel can only match by being kept."""
    return Image.effect_noise((128, 128), 70).convert("RGB").resize((128, 128))


def edit(picture: Image.Image, **fields: object) -> GenerationRequest:
    base = make_request("edit", seeds=(11, 12), steps=6, mode=Mode.INPAINT,
                        init_image=png(picture), strength=1.0)
    return replace(base, **fields)  # type: ignore[arg-type]


def run(worker: Worker, *requests: GenerationRequest) -> dict[str, GenerationResult]:
    outcomes = worker.run(list(requests))
    for outcome in outcomes.values():
        assert isinstance(outcome, GenerationResult), outcome
    return outcomes  # type: ignore[return-value]


def far_from(mask: Image.Image, distance: int = 8) -> np.ndarray:
    """Pixels farther than `distance` from every white pixel of `mask`."""
    white = np.asarray(mask) > 0
    near = np.zeros_like(white)
    ys, xs = np.nonzero(white)
    for y, x in zip(ys, xs, strict=True):
        near[max(0, y - distance):y + distance + 1, max(0, x - distance):x + distance + 1] = True
    return ~near


@pytest.mark.parametrize("model", ["tiny", "dedicated"])
def test_zoom_out_keeps_the_scaled_picture_and_generates_the_border(
        worker: Worker, picture: Image.Image, model: str) -> None:
    canvas = Canvas(128, 128, Box(32, 32, 64, 64))
    result = run(worker, edit(picture, model=model, box=str(canvas.box)))["edit"]
    expected = np.asarray(compose(picture, canvas)).astype(np.int16)
    kept = far_from(outside_mask(canvas))
    assert kept.sum() == 48 * 48
    for image in result.images:
        assert (image.width, image.height) == (128, 128)
        got = pixels(image)
        assert np.abs(got[kept] - expected[kept]).max() <= 2
        border = np.asarray(outside_mask(canvas)) > 0
        assert np.abs(got[border] - expected[border]).mean() > 10  # generated, not the pre-fill
    assert np.abs(pixels(result.images[0]) - pixels(result.images[1])).max() > 30  # own seeds


def test_the_dedicated_inpainting_model_draws_its_own_pictures(
        worker: Worker, picture: Image.Image) -> None:
    request = edit(picture, box="0,0,96,128", width=128, height=128)
    plain = run(worker, request)["edit"]
    dedicated = run(worker, replace(request, model="dedicated"))["edit"]
    assert np.abs(pixels(plain.images[0]) - pixels(dedicated.images[0])).mean() > 5
    assert "dedicated:inpaint@cpu" in worker.loaded_models()
    text = Image.open(io.BytesIO(dedicated.images[0].png)).info["parameters"]
    assert "Model: dedicated" in text
    assert "Denoising strength: 1, Mask blur: 7" in text  # what A1111 writes for inpainting


def test_pan_keeps_the_picture_at_full_size_on_a_wider_canvas(
        worker: Worker, picture: Image.Image) -> None:
    canvas = Canvas(192, 128, Box(64, 0, 128, 128))  # ⬅️: the picture against the right edge
    result = run(worker, edit(picture, width=192, height=128, box=str(canvas.box)))["edit"]
    got = pixels(result.images[0])
    assert got.shape == (128, 192, 3)
    kept = far_from(outside_mask(canvas))
    original = np.zeros_like(got)
    original[:, 64:] = np.asarray(picture)
    assert np.abs(got[kept] - original[kept]).max() <= 2


def test_a_mask_redraws_only_its_cells(worker: Worker, picture: Image.Image) -> None:
    mask = cells_mask({5}, 128, 128)
    result = run(worker, edit(picture, mask=png(mask), strength=0.9))["edit"]
    got, original = pixels(result.images[0]), np.asarray(picture).astype(np.int16)
    kept = far_from(mask)
    assert np.abs(got[kept] - original[kept]).max() <= 2
    inside = np.asarray(mask) > 0
    assert np.abs(got[inside] - original[inside]).mean() > 10


def test_edits_of_two_users_share_one_call_and_give_what_they_give_alone(
        worker: Worker, picture: Image.Image) -> None:
    other = Image.new("RGB", (128, 128), (30, 90, 200))
    zoom = edit(picture, job_id="zoom", seeds=(3,), box="32,32,64,64")
    region = edit(other, job_id="region", seeds=(4,), user_key="bob",
                  mask=png(cells_mask({1, 2}, 128, 128)))
    assert zoom.batch_key() == region.batch_key()
    together = run(worker, zoom, region)
    assert together["zoom"].batch_images == together["region"].batch_images == 2
    for request in (zoom, region):
        alone = run(worker, request)[request.job_id]
        difference = np.abs(pixels(alone.images[0]) - pixels(together[request.job_id].images[0]))
        assert difference.max() <= 2


def test_same_seed_same_edit(worker: Worker, picture: Image.Image) -> None:
    request = edit(picture, box="16,16,96,96")
    first, second = run(worker, request)["edit"], run(worker, request)["edit"]
    assert (pixels(first.images[1]) == pixels(second.images[1])).all()


def test_an_empty_mask_or_a_box_off_the_canvas_is_refused(
        worker: Worker, picture: Image.Image) -> None:
    empty = edit(picture, mask=png(Image.new("L", (128, 128), 0)))
    outcome = worker.run([empty])["edit"]
    assert isinstance(outcome, EngineError) and "The mask is empty" in str(outcome)
    outside = edit(picture, box="100,100,64,64")
    outcome = worker.run([outside])["edit"]
    assert isinstance(outcome, EngineError) and "outside the 128×128 canvas" in str(outcome)


def test_sdxl_inpaints_through_its_own_weights(model_files: ModelFiles,
                                               picture: Image.Image) -> None:
    xl = Worker(WorkerConfig(models=(describe("xl", str(model_files.xl)),),
                             cache_dir=str(model_files.tiny.parent), device="cpu"))
    canvas = Canvas(128, 128, Box(0, 0, 128, 96))  # ⬇️ of a 128×96 picture, in short
    request = edit(picture.resize((128, 96)), model="xl", box=str(canvas.box), seeds=(4,))
    result = run(xl, request)["edit"]
    got = pixels(result.images[0])
    expected = np.asarray(compose(picture.resize((128, 96)), canvas)).astype(np.int16)
    kept = far_from(outside_mask(canvas))
    assert np.abs(got[kept] - expected[kept]).max() <= 2
    assert np.abs(got[110:] - expected[110:]).mean() > 5
