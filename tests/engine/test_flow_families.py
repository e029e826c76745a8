"""FLUX.1 and SD 3.5 through the engine, on the tiny random models: seeds and batching, previews
of FLUX's packed latents, cancel, img2img and inpainting, LoRAs (diffusers' and kohya's formats),
what each refuses, SD 3.5 without its T5 encoder, and SD_OFFLOAD where there is no GPU."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from bot.engine.canvas import Box, Canvas, compose, outside_mask
from bot.engine.families import FAMILIES
from bot.engine.models import describe
from bot.engine.preview import colour_chart, fit_projection, latents_to_rgb
from bot.engine.samplers import make_scheduler
from bot.engine.types import EngineError, GenerationRequest, GenerationResult, Mode
from bot.engine.worker import StepReport, Worker, WorkerConfig, resolve_dtype
from tests.engine.helpers import difference, make_request, pixels
from tests.engine.test_inpaint import far_from, png
from tests.models import FamilyFiles

MODELS = ("flux", "sd3")


@pytest.fixture(scope="module")
def worker(family_files: FamilyFiles) -> Iterator[Worker]:
    """`flux` (FLUX.1 [schnell]), `sd3` (SD 3.5) and `sd3-small` (the same without T5)."""
    sd3 = describe("sd3", "tiny-sd3")
    specs = (describe("flux", "tiny-flux"), sd3,
             replace(sd3, name="sd3-small", family=sd3.family.without_t5()))
    yield Worker(WorkerConfig(models=specs, cache_dir=str(family_files.cache), device="cpu",
                              models_loaded=3, lora_dir=str(family_files.loras)))


def request(job_id: str, model: str, seeds: tuple[int, ...] = (1,),
            **fields: Any) -> GenerationRequest:
    base = make_request(job_id, seeds, model=model, steps=3, guidance=3.5, sampler="euler")
    return replace(base, **fields)


def run(worker: Worker, *requests: GenerationRequest,
        reports: list[StepReport] | None = None) -> dict[str, GenerationResult]:
    outcomes = worker.run(list(requests), report=None if reports is None else reports.append)
    for outcome in outcomes.values():
        assert isinstance(outcome, GenerationResult), outcome
    return outcomes  # type: ignore[return-value]


def refusal(worker: Worker, job: GenerationRequest) -> str:
    outcome = worker.run([job])[job.job_id]
    assert isinstance(outcome, EngineError), outcome
    return str(outcome)


@pytest.mark.parametrize("model", MODELS)
def test_image_i_is_seed_plus_i_alone_or_in_a_batch(worker: Worker, model: str) -> None:
    grid = request("grid", model, seeds=(40, 41, 42))
    other = request("other", model, seeds=(7,), prompt="a blue lighthouse")
    together = run(worker, grid, other)
    alone = run(worker, request("alone", model, seeds=(41,)))["alone"]
    lone_other = run(worker, replace(other, job_id="lone"))["lone"]
    # the same pixels up to float noise, whatever the batch
    assert difference(together["grid"].images[1], alone.images[0]) <= 2
    assert difference(together["other"].images[0], lone_other.images[0]) <= 2
    # and each seed and prompt its own picture
    assert difference(together["grid"].images[0], together["grid"].images[1]) > 10
    assert difference(together["grid"].images[0], together["other"].images[0]) > 10
    assert [image.seed for image in together["grid"].images] == [40, 41, 42]
    assert together["grid"].batch_images == 4  # one call for both jobs


def test_previews_unpack_flux_latents(worker: Worker) -> None:
    reports: list[StepReport] = []
    run(worker, request("preview", "flux", steps=4, width=192, height=96), reports=reports)
    previews = [report.previews["preview"] for report in reports if report.previews]
    assert previews
    # FLUX holds 2×2 latent patches in each row of its sequence; the preview shows them as a
    # picture of the latents' shape (1/8 of the image), twice that size
    assert Image.open(io.BytesIO(previews[0])).size == (192 // 8 * 2, 96 // 8 * 2)
    assert [report.total for report in reports] == [4] * len(reports)


def test_a_preview_projection_fitted_to_the_vae_gives_back_its_colours() -> None:
    """A VAE whose latents are a linear function of the colours (8× smaller): the fitted
    projection turns its latents back into the colours they came from."""
    mixing = torch.randn(16, 3, generator=torch.Generator().manual_seed(0))

    class LinearVae:
        dtype = torch.float32
        config = type("Config", (), {"shift_factor": 0.1, "scaling_factor": 0.5})()

        def encode(self, pixels: torch.Tensor) -> Any:
            small = torch.nn.functional.avg_pool2d(pixels, 8)
            latent = torch.einsum("bchw,lc->blhw", small, mixing) + 0.3
            return type("Out", (), {"latent_dist": type("Dist", (), {"mean": latent})()})()

    projection = fit_projection(LinearVae(), "cpu")
    chart = torch.from_numpy(np.asarray(colour_chart(), dtype=np.float32) / 127.5 - 1)
    small = torch.nn.functional.avg_pool2d(chart.permute(2, 0, 1)[None], 8)
    latents = (torch.einsum("bchw,lc->blhw", small, mixing) + 0.3 - 0.1) * 0.5
    rgb = latents_to_rgb(latents[0], projection).numpy().astype(int)
    expected = ((small[0].permute(1, 2, 0).numpy() + 1) * 127.5).round()
    assert np.abs(rgb - expected).max() <= 1


@pytest.mark.parametrize("model", MODELS)
def test_cancel_while_running_stops_the_pipeline(worker: Worker, model: str) -> None:
    reports: list[StepReport] = []
    outcome = worker.run([request("job", model, steps=30)], reports.append,
                         cancelled=lambda job_id: len(reports) >= 2)
    assert outcome == {}
    assert len(reports) == 2  # stopped within a step of the cancel


@pytest.mark.parametrize("model", MODELS)
def test_cancelling_one_job_of_a_batch_keeps_the_other(worker: Worker, model: str) -> None:
    keep = request("keep", model, seeds=(5,))
    outcomes = worker.run([keep, request("drop", model, seeds=(6,), user_key="u2")],
                          cancelled=lambda job_id: job_id == "drop")
    assert set(outcomes) == {"keep"}
    alone = run(worker, replace(keep, job_id="alone"))["alone"]
    kept = outcomes["keep"]
    assert isinstance(kept, GenerationResult)
    assert difference(kept.images[0], alone.images[0]) <= 2


@pytest.mark.parametrize("model", MODELS)
def test_img2img_makes_the_asked_size_from_the_picture(worker: Worker, model: str) -> None:
    # (the tiny models' random VAEs do not give a picture back, so how close a result stays to
    # its picture says nothing; that the picture decides the result, reproducibly, does)
    rng = np.random.default_rng(3)
    pictures = [Image.fromarray(rng.integers(0, 256, (96, 160, 3), dtype=np.uint8))
                for _ in range(2)]
    job = request("i2i", model, mode=Mode.IMG2IMG, init_image=png(pictures[0]), strength=0.6,
                  width=160, height=96)
    image = run(worker, job)["i2i"].images[0]
    assert (image.width, image.height) == (160, 96)
    again = run(worker, replace(job, job_id="again"))["again"].images[0]
    other = run(worker, replace(job, job_id="other", init_image=png(pictures[1])))["other"]
    assert difference(again, image) <= 1
    assert difference(other.images[0], image) > 10


@pytest.mark.parametrize("model", MODELS)
def test_inpainting_keeps_the_picture_and_draws_the_border(worker: Worker, model: str) -> None:
    picture = Image.effect_noise((64, 64), 70).convert("RGB")
    canvas = Canvas(128, 128, Box(32, 32, 64, 64))
    job = request("zoom", model, seeds=(3, 4), mode=Mode.INPAINT, init_image=png(picture),
                  strength=1.0, box=str(canvas.box))
    result = run(worker, job)["zoom"]
    expected = np.asarray(compose(picture, canvas)).astype(np.int16)
    kept = far_from(outside_mask(canvas))
    for image in result.images:
        got = pixels(image)
        assert (image.width, image.height) == (128, 128)
        assert np.abs(got[kept] - expected[kept]).max() <= 2
        assert np.abs(got[~kept] - expected[~kept]).mean() > 5  # the border is new


@pytest.mark.parametrize(("model", "lora"), [("flux", "flux-detail"), ("flux", "flux-kohya"),
                                             ("sd3", "sd3-detail")])
def test_loras_in_diffusers_and_kohya_formats_change_the_picture(worker: Worker, model: str,
                                                                 lora: str) -> None:
    plain = run(worker, request("plain", model))["plain"].images[0]
    styled = run(worker, request("lora", model, loras=((lora, 1.0),)))["lora"].images[0]
    off = run(worker, request("off", model, loras=((lora, 0.0),)))["off"].images[0]
    assert difference(plain, styled) > 10
    assert difference(plain, off) <= 1  # weight 0 is the picture without it


def test_a_lora_of_another_family_fails_its_job_alone(worker: Worker) -> None:
    assert refusal(worker, request("wrong", "flux", loras=(("detail", 1.0),))) == (
        "LoRA `detail` does not fit model `flux` (FLUX.1 [schnell] (tiny, random))")


def test_what_flux_and_sd35_refuse(worker: Worker) -> None:
    assert refusal(worker, request("sampler", "flux", sampler="dpm++_2m_karras")) == (
        "FLUX.1 [schnell] (tiny, random) is a flow-matching model: it takes the sampler `euler` "
        "(flow-matching Euler), not `dpm++_2m_karras`")
    assert "takes no negative prompt" in refusal(worker, request("neg", "flux", negative="fog"))
    assert refusal(worker, request("parts", "sd3", prompt="a cat::2 a dog")) == (
        "SD 3.5 Large (tiny, random) reads the prompt as one sentence: `::` weights do not apply "
        "to it; write the parts as one prompt")
    # the tiny T5's pieces are single characters: 300 letters are over 256 tokens
    assert refusal(worker, request("long", "flux", prompt="a" * 300)) == (
        "The prompt is 302 tokens long; FLUX.1 [schnell] (tiny, random) reads at most 256 T5 "
        "tokens")


def test_sd35_reads_negative_prompts_and_guidance(worker: Worker) -> None:
    plain = run(worker, request("plain", "sd3", guidance=5.0))["plain"].images[0]
    negative = run(worker, request("neg", "sd3", guidance=5.0, negative="fog"))["neg"]
    assert difference(plain, negative.images[0]) > 10


def test_sd35_without_t5(worker: Worker) -> None:
    result = run(worker, request("small", "sd3-small"))["small"]
    assert result.images[0].width == 128
    assert worker.model("sd3-small").pipe.text_encoder_3 is None
    assert refusal(worker, request("long", "sd3-small", prompt="a" * 100)) == (
        "The prompt is 102 tokens long; SD 3.5 Large (tiny, random) without T5 reads at most 77 "
        "CLIP tokens")


def test_pictures_carry_their_parameters(worker: Worker) -> None:
    image = run(worker, request("meta", "flux", seeds=(9,)))["meta"].images[0]
    assert Image.open(io.BytesIO(image.png)).info["parameters"] == (
        "a red fox\nSteps: 3, Sampler: Euler, CFG scale: 3.5, Seed: 9, Size: 128x128, "
        "Model: flux")


def test_schedulers_by_family() -> None:
    flux = make_scheduler("euler", {"shift": 1.0}, FAMILIES["flux-dev"])
    assert type(flux).__name__ == "FlowMatchEulerDiscreteScheduler"
    lightning = make_scheduler("euler", {"timestep_spacing": "leading"}, FAMILIES["lightning"])
    assert type(lightning).__name__ == "EulerDiscreteScheduler"
    assert lightning.config.timestep_spacing == "trailing"
    hyper = make_scheduler("ddim", {}, FAMILIES["hyper"])
    assert (type(hyper).__name__, hyper.config.timestep_spacing) == ("DDIMScheduler", "trailing")


def test_auto_dtype_by_family() -> None:
    assert resolve_dtype("auto", "cpu", FAMILIES["flux-dev"]) == torch.float32
    assert resolve_dtype("auto", "mps", FAMILIES["flux-dev"]) == torch.bfloat16
    assert resolve_dtype("auto", "mps", FAMILIES["sdxl"]) == torch.float16
    assert resolve_dtype("float16", "mps", FAMILIES["flux-dev"]) == torch.float16


def test_sd_offload_does_nothing_without_a_gpu(family_files: FamilyFiles,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """Offloading moves parts between RAM and a GPU; on the CPU everything is in RAM already:
    the model loads as usual and the log says the setting does nothing here."""
    offloading = Worker(WorkerConfig(models=(describe("flux", "tiny-flux"),),
                                     cache_dir=str(family_files.cache), device="cpu",
                                     offload="model"))
    with caplog.at_level(logging.INFO, logger="bot.engine.worker"):
        image = run(offloading, request("job", "flux", seeds=(9,)))["job"].images[0]
    assert "SD_OFFLOAD=model does nothing on cpu" in caplog.text
    assert offloading.loaded_models() == ["flux@cpu"]
    assert (image.width, image.height) == (128, 128)
