"""ControlNet, IP-Adapter references and captioning on the tiny model, with tiny random adapters:
a condition changes the pixels, the same condition and seed give the same pixels, a weight of 0
draws as if there were no condition, and each job of a batch keeps its own condition."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from bot.engine.adapters import AdapterConfig
from bot.engine.control import LIMB_SHADE, OPENPOSE_COLOURS, openpose_points, pose_skeleton
from bot.engine.models import describe
from bot.engine.types import (
    CaptionRequest,
    CaptionResult,
    Control,
    EngineError,
    GenerationRequest,
    GenerationResult,
    Mode,
    Reference,
)
from bot.engine.worker import Worker, WorkerConfig
from tests.engine.helpers import difference, make_request, pixels


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def worker(tiny_model_dir: Path, tiny_adapters: dict[str, Path]) -> Iterator[Worker]:
    adapters = AdapterConfig(
        controlnets=(("tiny", "canny", str(tiny_adapters["controlnet"])),
                     ("tiny", "tile", str(tiny_adapters["controlnet"])),
                     ("tiny", "depth", str(tiny_adapters["controlnet"])),
                     ("tiny", "pose", str(tiny_adapters["controlnet"]))),
        ip_adapters=(("tiny", str(tiny_adapters["ip_adapter"])),),
        annotators=(("depth", str(tiny_adapters["depth"])), ("pose", str(tiny_adapters["pose"]))),
        caption_model=str(tiny_adapters["captioner"]))
    yield Worker(WorkerConfig(models=(describe("tiny", "tiny"),), device="cpu",
                              cache_dir=str(tiny_model_dir.parent), adapters=adapters,
                              finish_threads=0))


@pytest.fixture(scope="module")
def drawing() -> bytes:
    """A square outline: canny finds its edges."""
    picture = Image.new("RGB", (96, 96), "white")
    ImageDraw.Draw(picture).rectangle((20, 20, 76, 76), outline="black", width=4)
    return png(picture)


RED, BLUE = (png(Image.new("RGB", (40, 50), colour)) for colour in ("red", "blue"))


def run(worker: Worker, *requests: GenerationRequest) -> dict[str, GenerationResult]:
    outcomes = worker.run(list(requests))
    for outcome in outcomes.values():
        assert isinstance(outcome, GenerationResult), outcome
    return outcomes  # type: ignore[return-value]


def request(job_id: str, **fields: object) -> GenerationRequest:
    return make_request(job_id, seeds=(5, 6), **fields)


def test_a_control_image_changes_the_pixels_and_reproduces(worker: Worker,
                                                          drawing: bytes) -> None:
    control = Control("canny", drawing)
    plain = run(worker, request("plain"))["plain"]
    first = run(worker, request("first", control=control))["first"]
    again = run(worker, request("again", control=control))["again"]
    assert difference(plain.images[0], first.images[0]) > 10
    assert difference(first.images[0], again.images[0]) == 0
    # The canny map the ControlNet read: edges only, at the job's size
    assert first.control_map is not None
    edges = pixels(first.control_map)
    assert edges.shape == (128, 128, 3) and set(np.unique(edges)) == {0, 255}
    assert plain.control_map is None
    parameters = Image.open(io.BytesIO(first.images[0].png)).info["parameters"]
    assert parameters.endswith(', ControlNet 0: "Module: canny, Weight: 1"')


def test_control_weight_zero_draws_as_if_there_were_none(worker: Worker, drawing: bytes) -> None:
    plain = run(worker, request("plain"))["plain"]
    off = run(worker, request("off", control=Control("canny", drawing, 0.0)))["off"]
    assert difference(plain.images[0], off.images[0]) == 0
    weak = run(worker, request("weak", control=Control("canny", drawing, 0.5)))["weak"]
    strong = run(worker, request("strong", control=Control("canny", drawing, 2.0)))["strong"]
    assert difference(weak.images[0], strong.images[0]) > 0


def test_control_combines_with_img2img_and_inpainting(worker: Worker, drawing: bytes) -> None:
    start = png(Image.effect_noise((128, 128), 60).convert("RGB"))
    control = Control("tile", drawing)
    img2img = request("img2img", mode=Mode.IMG2IMG, init_image=start, strength=0.8,
                      width=96, height=128)
    inpaint = request("inpaint", mode=Mode.INPAINT, init_image=start, strength=1.0,
                      box="16,16,96,96")
    for job in (img2img, inpaint):
        without = run(worker, job)[job.job_id]
        within = run(worker, replace(job, control=control))[job.job_id]
        assert (within.images[0].width, within.images[0].height) == (job.width, job.height)
        assert difference(without.images[0], within.images[0]) > 0


def test_jobs_of_one_call_keep_their_own_control_maps(worker: Worker, drawing: bytes) -> None:
    """Jobs with the same ControlNet share a call (SPEC §5), each held to its own picture."""
    circle = Image.new("RGB", (96, 96), "white")
    ImageDraw.Draw(circle).ellipse((10, 30, 86, 66), outline="black", width=4)
    controls = {"square": Control("canny", drawing), "circle": Control("canny", png(circle))}
    alone = {name: run(worker, request(name, control=control))[name]
             for name, control in controls.items()}
    together = run(worker, *(request(name, control=control)
                             for name, control in controls.items()))
    for name, before in alone.items():
        after = together[name]
        assert after.batch_images == 4
        assert after.control_map is not None and before.control_map is not None
        assert (pixels(after.control_map) == pixels(before.control_map)).all()
        for one, batched in zip(before.images, after.images, strict=True):
            assert difference(one, batched) <= 2  # batch-shape rounding only
    assert difference(together["square"].images[0], together["circle"].images[0]) > 10


def test_a_control_without_its_controlnet_fails_the_job_alone(worker: Worker,
                                                              drawing: bytes) -> None:
    outcome = worker.run([request("lines", control=Control("scribble", drawing))])["lines"]
    assert isinstance(outcome, EngineError)
    assert "No ControlNet for `scribble`" in str(outcome)


def test_the_depth_annotator_makes_the_depth_map(worker: Worker, drawing: bytes) -> None:
    depth = run(worker, request("depth", control=Control("depth", drawing)))["depth"]
    assert depth.control_map is not None
    made = pixels(depth.control_map)
    assert made.shape == (128, 128, 3)
    assert (made[..., 0] == made[..., 1]).all()  # a grey depth map…
    as_is = pixels(png(Image.open(io.BytesIO(drawing)).resize((128, 128))))
    assert np.abs(made - as_is).max() > 0  # …not the picture itself


OPENPOSE_SHADES = {*OPENPOSE_COLOURS, *(tuple(int(level * LIMB_SHADE) for level in colour)
                                        for colour in OPENPOSE_COLOURS)}


def test_the_pose_annotator_draws_an_openpose_skeleton(worker: Worker, drawing: bytes) -> None:
    pose = run(worker, request("pose", control=Control("pose", drawing)))["pose"]
    assert pose.control_map is not None
    made = pixels(pose.control_map)
    assert made.shape == (128, 128, 3)
    colours = {tuple(int(level) for level in colour) for colour in made.reshape(-1, 3)}
    black = (made == 0).all(axis=-1).mean()
    assert 0.5 < black < 1  # mostly black, with a skeleton on it…
    assert colours - {(0, 0, 0)} <= OPENPOSE_SHADES  # …in OpenPose's colours only
    assert len(colours) > 5
    as_is = pixels(png(Image.open(io.BytesIO(drawing)).resize((128, 128))))
    assert np.abs(made - as_is).max() > 0  # not the picture itself
    assert len(pose.images) == 2  # and the job drew with it


def test_the_pose_skeleton_is_drawn_as_openpose_draws_it() -> None:
    # COCO keypoints: the shoulders (5 left, 6 right) make the neck; the right elbow (8) is
    # seen, the left elbow (7) scores too low to be drawn
    keypoints = [(0.0, 0.0)] * 17
    scores = [0.0] * 17
    for index, point, score in ((5, (150.0, 60.0), 0.9), (6, (50.0, 60.0), 0.9),
                                (8, (50.0, 160.0), 0.8), (7, (150.0, 160.0), 0.1)):
        keypoints[index], scores[index] = point, score
    points = openpose_points(keypoints, scores)
    assert points[1] == (100.0, 60.0)  # the neck, between the shoulders
    assert points[3] == (50.0, 160.0) and points[6] is None
    made = np.asarray(pose_skeleton(points, 200, 200))
    shade = [int(level * LIMB_SHADE) for level in OPENPOSE_COLOURS[2]]  # right upper arm
    assert made[110, 50].tolist() == shade  # along the limb from the right shoulder to elbow
    assert made[60, 50].tolist() == list(OPENPOSE_COLOURS[2])  # the right shoulder's dot
    assert made[160, 50].tolist() == list(OPENPOSE_COLOURS[3])  # the right elbow's dot
    assert made[60, 75].tolist() == [int(level * LIMB_SHADE)  # the neck to the right shoulder
                                     for level in OPENPOSE_COLOURS[0]]
    assert made[110, 150].tolist() == [0, 0, 0]  # the left elbow scored too low: no arm…
    assert made[160, 150].tolist() == [0, 0, 0]  # …and no dot
    assert made[10:40, :].max() == 0 and made[180:, :].max() == 0  # black elsewhere


def test_a_reference_steers_and_iw_zero_draws_as_if_there_were_none(worker: Worker) -> None:
    plain = run(worker, request("plain"))["plain"]
    red = run(worker, request("red", reference=Reference((RED,))))["red"]
    blue = run(worker, request("blue", reference=Reference((BLUE,))))["blue"]
    off = run(worker, request("off", reference=Reference((RED,), weight=0.0)))["off"]
    assert difference(plain.images[0], red.images[0]) > 10
    assert difference(red.images[0], blue.images[0]) > 0
    assert difference(plain.images[0], off.images[0]) == 0
    # the adapter is taken off again: a job without a reference draws as before
    after = run(worker, request("after"))["after"]
    assert difference(plain.images[0], after.images[0]) == 0


def test_jobs_of_one_call_keep_their_own_references(worker: Worker) -> None:
    alone = [run(worker, request(name, reference=Reference((data,))))[name]
             for name, data in (("red", RED), ("blue", BLUE))]
    together = run(worker, request("red", reference=Reference((RED,))),
                   request("blue", reference=Reference((BLUE,))))
    assert together["red"].batch_images == 4
    for before, other in zip(alone, reversed(alone), strict=True):
        after = together[before.job_id]
        for one, batched in zip(before.images, after.images, strict=True):
            # batch-shape rounding only (SPEC §5); the other job's reference is far off
            assert difference(one, batched) <= 2
        assert difference(other.images[0], after.images[0]) > 20


def test_style_references_and_blends(worker: Worker) -> None:
    image = run(worker, request("image", reference=Reference((RED,))))["image"]
    style = run(worker, request("style", reference=Reference((RED,), style=100.0)))["style"]
    heavy = run(worker, request("heavy", reference=Reference((RED,), style=1000.0)))["heavy"]
    assert difference(image.images[0], style.images[0]) > 0
    assert difference(style.images[0], heavy.images[0]) > 0
    blend = run(worker, request("blend", prompt="", reference=Reference((RED, BLUE))))["blend"]
    assert difference(blend.images[0], image.images[0]) > 0


def test_conditions_are_part_of_the_batch_key(drawing: bytes) -> None:
    base = request("a")
    canny = replace(base, control=Control("canny", drawing))
    assert canny.batch_key() != base.batch_key()
    assert canny.batch_key() == replace(canny, job_id="b").batch_key()
    assert canny.batch_key() != replace(canny, control=Control("tile", drawing)).batch_key()
    assert canny.batch_key() != replace(canny, control=Control("canny", drawing, 1.5)).batch_key()
    # a weight of 0 is no condition at all: such jobs share calls with plain ones
    assert replace(base, control=Control("canny", drawing, 0.0)).batch_key() == base.batch_key()
    assert replace(base, reference=Reference((RED,), 0.0)).batch_key() == base.batch_key()
    one = replace(base, reference=Reference((RED,)))
    assert one.batch_key() == replace(one, reference=Reference((BLUE,))).batch_key()
    assert one.batch_key() != replace(one, reference=Reference((RED, BLUE))).batch_key()
    assert one.batch_key() != replace(one, reference=Reference((RED,), style=100.0)).batch_key()


def test_captions_are_four_suggestions_per_picture(worker: Worker, drawing: bytes) -> None:
    outcomes = worker.run([CaptionRequest("one", "user", drawing, seed=1),
                           CaptionRequest("two", "user", RED, seed=2)])
    for job_id in ("one", "two"):
        result = outcomes[job_id]
        assert isinstance(result, CaptionResult), result
        assert len(result.suggestions) == 4
        assert all(suggestion.strip() for suggestion in result.suggestions)
    again = worker.run([CaptionRequest("one", "user", drawing, seed=1),
                        CaptionRequest("two", "user", RED, seed=2)])
    assert again["one"] == replace(outcomes["one"], seconds=again["one"].seconds)  # type: ignore[arg-type]


def test_a_pictures_suggestions_are_its_own_whatever_the_batch(worker: Worker,
                                                               drawing: bytes) -> None:
    batched = worker.run([CaptionRequest("first", "user", RED, seed=9),
                          CaptionRequest("mine", "user", drawing, seed=5)])["mine"]
    alone = worker.run([CaptionRequest("mine", "user", drawing, seed=5)])["mine"]
    reseeded = worker.run([CaptionRequest("mine", "user", drawing, seed=6)])["mine"]
    assert isinstance(batched, CaptionResult) and isinstance(alone, CaptionResult)
    assert isinstance(reseeded, CaptionResult)
    assert batched.suggestions == alone.suggestions
    assert reseeded.suggestions != alone.suggestions


def test_captioning_needs_a_model(tiny_model_dir: Path) -> None:
    bare = Worker(WorkerConfig(models=(describe("tiny", "tiny"),), device="cpu",
                               cache_dir=str(tiny_model_dir.parent), finish_threads=0))
    outcome = bare.run([CaptionRequest("one", "user", RED)])["one"]
    assert isinstance(outcome, EngineError)
    assert "SD_CAPTION_MODEL" in str(outcome)
