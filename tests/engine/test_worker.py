"""The worker with the real `tiny` model: reproducible pixels, samplers, img2img, cancel."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from bot.engine.samplers import SAMPLERS
from bot.engine.types import EngineError, GenerationResult, Mode
from bot.engine.worker import StepReport, Worker
from tests.engine.helpers import difference, make_request, pixels


def run_one(worker: Worker, **fields: object) -> GenerationResult:
    request = make_request("job", **fields)  # type: ignore[arg-type]
    outcome = worker.run([request])["job"]
    assert isinstance(outcome, GenerationResult), outcome
    return outcome


def parameters(png: bytes) -> str:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    return str(image.info["parameters"])


def test_same_seed_same_pixels(tiny_worker: Worker) -> None:
    first = run_one(tiny_worker, seeds=(7, 8))
    second = run_one(tiny_worker, seeds=(7, 8))
    for a, b in zip(first.images, second.images, strict=True):
        assert np.array_equal(pixels(a), pixels(b))
    assert difference(first.images[0], first.images[1]) > 50  # each seed its own picture


def test_result_shape(tiny_worker: Worker) -> None:
    result = run_one(tiny_worker, seeds=(3, 4, 5), width=168, height=96)
    assert result.job_id == "job" and result.model == "tiny"
    assert [image.seed for image in result.images] == [3, 4, 5]
    assert result.batch_images == 3 and result.seconds > 0
    for image in result.images:
        assert (image.width, image.height) == (168, 96)
        assert Image.open(io.BytesIO(image.png)).size == (168, 96)
        assert not image.nsfw


def test_image_i_of_a_batch_is_seed_plus_i_alone(tiny_worker: Worker) -> None:
    grid = run_one(tiny_worker, seeds=(100, 101, 102, 103), steps=6)
    for index in range(4):
        alone = run_one(tiny_worker, seeds=(100 + index,), steps=6)
        # equal up to floating-point differences between batch shapes (SPEC §5)
        assert difference(grid.images[index], alone.images[0]) <= 2


def test_jobs_batched_together_match_each_job_alone(tiny_worker: Worker) -> None:
    first = make_request("first", seeds=(11, 12), prompt="a red fox")
    second = make_request("second", seeds=(11,), prompt="a blue whale", user_key="other")
    outcomes = tiny_worker.run([first, second])
    together_first, together_second = outcomes["first"], outcomes["second"]
    assert isinstance(together_first, GenerationResult)
    assert isinstance(together_second, GenerationResult)
    assert together_first.batch_images == together_second.batch_images == 3
    assert [i.seed for i in together_first.images] == [11, 12]
    alone = run_one(tiny_worker, seeds=(11,), prompt="a blue whale")
    assert difference(together_second.images[0], alone.images[0]) <= 2
    assert difference(together_first.images[0], together_second.images[0]) > 8


def _mean_difference(a: GenerationResult, b: GenerationResult) -> float:
    return float(np.abs(pixels(a.images[0]) - pixels(b.images[0])).mean())


def test_prompts_change_the_picture(tiny_worker: Worker) -> None:
    cat = run_one(tiny_worker, seeds=(5,), prompt="a cat")
    dog = run_one(tiny_worker, seeds=(5,), prompt="a dog")
    assert _mean_difference(cat, dog) > 0.5
    negative = run_one(tiny_worker, seeds=(5,), prompt="a cat", negative="blurry")
    assert _mean_difference(cat, negative) > 0.5


def test_a_blend_differs_from_its_parts(tiny_worker: Worker) -> None:
    cat = run_one(tiny_worker, seeds=(5,), prompt="a cat")
    dog = run_one(tiny_worker, seeds=(5,), prompt="a dog")
    blend = run_one(tiny_worker, seeds=(5,), prompt="a cat::1 a dog::1")
    pushed = run_one(tiny_worker, seeds=(5,), prompt="a cat::1 a dog::-0.5")
    for part in (cat, dog):
        assert _mean_difference(blend, part) > 0.5
        assert _mean_difference(pushed, part) > 0.5
    assert _mean_difference(blend, pushed) > 0.5
    # a single part with a weight is the same as the plain prompt
    weighted = run_one(tiny_worker, seeds=(5,), prompt="a cat::2")
    assert difference(weighted.images[0], cat.images[0]) == 0


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_every_sampler_runs(tiny_worker: Worker, name: str) -> None:
    result = run_one(tiny_worker, seeds=(9, 10), sampler=name, steps=3)
    assert [(i.width, i.height) for i in result.images] == [(128, 128)] * 2
    assert f"Sampler: {SAMPLERS[name].label}," in parameters(result.images[0].png)
    again = run_one(tiny_worker, seeds=(9, 10), sampler=name, steps=3)
    assert difference(result.images[1], again.images[1]) == 0  # reproducible, noise included


def test_png_carries_parameters_with_the_exact_seeds(tiny_worker: Worker) -> None:
    result = run_one(tiny_worker, seeds=(4294967292, 4294967293, 4294967294, 4294967295),
                     prompt="a red fox", negative="blurry", steps=3, guidance=6.5,
                     width=168, height=96)
    for offset, image in enumerate(result.images):
        assert image.seed == 4294967292 + offset
        text = parameters(image.png)
        assert text == ("a red fox\nNegative prompt: blurry\nSteps: 3, Sampler: Euler, "
                        f"CFG scale: 6.5, Seed: {4294967292 + offset}, Size: 168x96, Model: tiny")


def test_img2img_keeps_the_size(tiny_worker: Worker) -> None:
    start = Image.new("RGB", (300, 170), (200, 30, 30))
    buffer = io.BytesIO()
    start.save(buffer, format="PNG")
    result = run_one(tiny_worker, seeds=(1, 2), width=168, height=96, steps=10,
                     mode=Mode.IMG2IMG, init_image=buffer.getvalue(), strength=0.5)
    assert [(i.width, i.height) for i in result.images] == [(168, 96)] * 2
    assert "Denoising strength: 0.5" in parameters(result.images[0].png)
    again = run_one(tiny_worker, seeds=(1,), width=168, height=96, steps=10,
                    mode=Mode.IMG2IMG, init_image=buffer.getvalue(), strength=0.5)
    assert difference(result.images[0], again.images[0]) <= 2
    txt2img = run_one(tiny_worker, seeds=(1,), width=168, height=96, steps=10)
    assert _mean_difference(result, txt2img) > 0.5


def test_img2img_with_few_effective_steps(tiny_worker: Worker) -> None:
    start = Image.new("RGB", (128, 128), (30, 30, 200))
    buffer = io.BytesIO()
    start.save(buffer, format="PNG")
    result = run_one(tiny_worker, seeds=(1,), steps=10, mode=Mode.IMG2IMG,
                     init_image=buffer.getvalue(), strength=0.05)
    assert (result.images[0].width, result.images[0].height) == (128, 128)


def test_step_reports_and_previews(tiny_worker: Worker) -> None:
    reports: list[StepReport] = []
    request = make_request("job", seeds=(1, 2), steps=5)
    other = make_request("other", seeds=(3,), steps=5, user_key="u2")
    tiny_worker.run([request, other], reports.append)
    assert [report.step for report in reports] == [1, 2, 3, 4, 5]
    assert all(report.total == 5 for report in reports)
    assert all(report.job_ids == ("job", "other") for report in reports)
    # a preview of each job, a small PNG projected from the first step's latents, made on a
    # finishing thread and sent with the next report after it is ready
    previews = [report.previews for report in reports if report.previews]
    assert previews and set(previews[0]) == {"job", "other"}
    preview = Image.open(io.BytesIO(previews[0]["job"]))
    assert preview.format == "PNG" and preview.size == (32, 32)


def test_a_cancelled_job_gives_no_result(tiny_worker: Worker) -> None:
    assert tiny_worker.run([make_request("job")], cancelled=lambda job_id: True) == {}


def test_cancel_while_running_stops_the_pipeline(tiny_worker: Worker) -> None:
    reports: list[StepReport] = []
    outcome = tiny_worker.run([make_request("job", steps=50)], reports.append,
                              cancelled=lambda job_id: len(reports) >= 2)
    assert outcome == {}
    assert len(reports) == 2  # stopped within a step of the cancel


def test_cancelling_one_job_of_a_batch_keeps_the_other(tiny_worker: Worker) -> None:
    outcomes = tiny_worker.run(
        [make_request("keep", seeds=(1,)), make_request("drop", seeds=(2,), user_key="u2")],
        cancelled=lambda job_id: job_id == "drop",
    )
    assert set(outcomes) == {"keep"}
    assert isinstance(outcomes["keep"], GenerationResult)


def test_unknown_model_fails_the_job_only(tiny_worker: Worker) -> None:
    outcome = tiny_worker.run([make_request("job", model="nope")])["job"]
    assert isinstance(outcome, EngineError) and "nope" in str(outcome)
    assert isinstance(tiny_worker.run([make_request("next")])["next"], GenerationResult)


def test_unknown_sampler_fails_the_job(tiny_worker: Worker) -> None:
    outcome = tiny_worker.run([make_request("job", sampler="heun")])["job"]
    assert isinstance(outcome, EngineError)


def test_a_bad_request_in_a_batch_does_not_fail_the_others(tiny_worker: Worker) -> None:
    good = make_request("good", seeds=(1,))
    broken = make_request("broken", seeds=(2,), prompt="x::1 y::-1")  # weights add up to 0
    outcomes = tiny_worker.run([good, broken])
    assert isinstance(outcomes["good"], GenerationResult)
    assert isinstance(outcomes["broken"], EngineError)
    assert str(outcomes["broken"]) == "The `::` weights must add up to more than 0"


def test_a_prompt_needing_too_many_chunks_fails_alone(tiny_worker: Worker) -> None:
    alone = run_one(tiny_worker, seeds=(1,))
    long = make_request("long", seeds=(2,), prompt="a fox BREAK " * 9)
    negative = make_request("negative", seeds=(3,), negative="blurry BREAK " * 12)
    outcomes = tiny_worker.run([make_request("good", seeds=(1,)), long, negative])
    good = outcomes["good"]
    assert isinstance(good, GenerationResult)
    assert difference(good.images[0], alone.images[0]) == 0
    assert str(outcomes["long"]) == (
        "The prompt needs 9 chunks of 75 tokens; at most 8 are allowed (each `BREAK` starts a "
        "new chunk, and each `::` part has chunks of its own)")
    assert isinstance(outcomes["negative"], EngineError)
    assert str(outcomes["negative"]).startswith("The negative prompt needs 12 chunks")
