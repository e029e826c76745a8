"""The worker with every kind of model: SDXL, single-file checkpoints, switching models, LoRAs,
long prompts, and few-step turbo settings."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from bot.engine.models import describe
from bot.engine.samplers import make_scheduler
from bot.engine.types import EngineError, GenerationRequest, GenerationResult, Mode
from bot.engine.worker import Worker, WorkerConfig
from tests.engine.helpers import difference, make_request, pixels
from tests.models import ModelFiles, build_tiny_vae

LONG = " ".join(["lighthouse", "harbour", "gulls", "stormy"] * 6)  # 168 tokens: 3 chunks


def make_worker(model_files: ModelFiles, *sources: tuple[str, Path | str],
                models_loaded: int = 4) -> Worker:
    specs = (describe("tiny", "tiny"),) + tuple(describe(name, str(s)) for name, s in sources)
    return Worker(WorkerConfig(models=specs, cache_dir=str(model_files.tiny.parent),
                               device="cpu", models_loaded=models_loaded,
                               lora_dir=str(model_files.loras)))


@pytest.fixture(scope="module")
def worker(model_files: ModelFiles) -> Iterator[Worker]:
    """A CPU worker holding the tiny SD 1.x and SDXL models, with the test LoRAs."""
    yield make_worker(model_files, ("xl", model_files.xl))


def run(worker: Worker, *requests: GenerationRequest) -> dict[str, GenerationResult]:
    outcomes = worker.run(list(requests))
    for outcome in outcomes.values():
        assert isinstance(outcome, GenerationResult), outcome
    return outcomes  # type: ignore[return-value]


def one(worker: Worker, **fields: Any) -> GenerationResult:
    return run(worker, make_request("job", **fields))["job"]


def mean_difference(a: GenerationResult, b: GenerationResult) -> float:
    return float(np.abs(pixels(a.images[0]) - pixels(b.images[0])).mean())


def png(size: tuple[int, int], colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


# ---- SDXL ---------------------------------------------------------------------------------------

def test_sdxl_gives_what_its_own_pipeline_gives(worker: Worker, model_files: ModelFiles) -> None:
    """Prompt and pooled embeddings, the zeros for an empty negative prompt, the size and time
    conditioning: the worker's pictures are the SDXL pipeline's own."""
    from diffusers import AutoPipelineForText2Image

    result = one(worker, model="xl", seeds=(3, 4), steps=4, guidance=6.0)
    pipe = AutoPipelineForText2Image.from_pretrained(model_files.xl)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = make_scheduler("euler", pipe.scheduler.config)
    own = pipe(prompt=["a red fox"] * 2, num_inference_steps=4, guidance_scale=6.0, width=128,
               height=128, generator=[torch.Generator().manual_seed(s) for s in (3, 4)]).images
    for image, picture in zip(result.images, own, strict=True):
        assert int(np.abs(pixels(image) - np.asarray(picture, dtype=np.int16)).max()) <= 1
    assert "Model: xl" in Image.open(io.BytesIO(result.images[0].png)).info["parameters"]


def test_sdxl_batches_blends_and_negatives(worker: Worker) -> None:
    first = make_request("first", model="xl", seeds=(11,), prompt="a red fox")
    second = make_request("second", model="xl", seeds=(11,), prompt="a blue whale::1 ice::-0.3",
                          negative="blurry", user_key="other")
    together = run(worker, first, second)
    assert together["first"].batch_images == 2
    alone = one(worker, model="xl", seeds=(11,), prompt="a blue whale::1 ice::-0.3",
                negative="blurry")
    assert difference(together["second"].images[0], alone.images[0]) <= 2
    assert mean_difference(together["first"], together["second"]) > 0.5


def test_sdxl_img2img_from_an_upload(worker: Worker) -> None:
    start = png((300, 150), (200, 40, 40))
    result = one(worker, model="xl", seeds=(1, 2), width=184, height=88, steps=6,
                 mode=Mode.IMG2IMG, init_image=start, strength=0.6)
    assert [(image.width, image.height) for image in result.images] == [(184, 88)] * 2
    txt2img = one(worker, model="xl", seeds=(1,), width=184, height=88, steps=6)
    assert mean_difference(result, txt2img) > 0.5


# ---- VAEs ---------------------------------------------------------------------------------------

def test_sd_vae_replaces_a_models_own(model_files: ModelFiles, tmp_path: Path) -> None:
    """SD_VAE: the pictures are those of the model's pipeline with that VAE in it."""
    from diffusers import AutoencoderKL, StableDiffusionPipeline

    folder = build_tiny_vae(tmp_path / "vae", seed=5)
    fixed = replace(describe("fixed", "tiny"), vae=str(folder))
    worker = Worker(WorkerConfig(models=(describe("tiny", "tiny"), fixed), device="cpu",
                                 cache_dir=str(model_files.tiny.parent), models_loaded=2))
    with_vae = one(worker, model="fixed", seeds=(3,), steps=3)
    own = one(worker, model="tiny", seeds=(3,), steps=3)
    assert mean_difference(with_vae, own) > 0.5
    pipe = StableDiffusionPipeline.from_pretrained(model_files.tiny,
                                                   vae=AutoencoderKL.from_pretrained(folder))
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = make_scheduler("euler", pipe.scheduler.config)
    picture = pipe(prompt="a red fox", num_inference_steps=3, guidance_scale=7.0, width=128,
                   height=128, generator=torch.Generator().manual_seed(3)).images[0]
    assert int(np.abs(pixels(with_vae.images[0]) - np.asarray(picture, np.int16)).max()) <= 1


def float16_xl(model_files: ModelFiles, vae: Path | None = None) -> Worker:
    spec = describe("xl", str(model_files.xl))
    spec = replace(spec, vae=str(vae)) if vae is not None else spec
    return Worker(WorkerConfig(models=(spec,), device="cpu", dtype="float16",
                               cache_dir=str(model_files.tiny.parent)))


def decoder_inputs(worker: Worker) -> list[tuple[torch.dtype, int]]:
    seen: list[tuple[torch.dtype, int]] = []
    worker.model("xl").pipe.vae.decoder.register_forward_pre_hook(
        lambda module, args: seen.append((args[0].dtype, args[0].shape[0])))
    return seen


def test_an_sdxl_vae_in_float16_decodes_in_float32_one_picture_at_a_time(
        model_files: ModelFiles) -> None:
    """SDXL's VAE overflows in float16 (`force_upcast`): only its decode runs in float32, one
    picture at a time, not the whole batch (15–25 GB at batch 8 on a card)."""
    from diffusers import AutoPipelineForText2Image

    worker = float16_xl(model_files)
    seen = decoder_inputs(worker)
    result = one(worker, model="xl", seeds=(3, 4, 5), steps=3, guidance=6.0)
    assert seen == [(torch.float32, 1)] * 3
    assert worker.model("xl").pipe.vae.dtype == torch.float16  # back in float16 afterwards
    pipe = AutoPipelineForText2Image.from_pretrained(model_files.xl, dtype=torch.float16)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = make_scheduler("euler", pipe.scheduler.config)
    own = pipe(prompt=["a red fox"] * 3, num_inference_steps=3, guidance_scale=6.0, width=128,
               height=128, generator=[torch.Generator().manual_seed(s) for s in (3, 4, 5)]).images
    for image, picture in zip(result.images, own, strict=True):
        assert int(np.abs(pixels(image) - np.asarray(picture, dtype=np.int16)).max()) <= 2


def test_an_fp16_safe_sd_vae_decodes_in_float16(model_files: ModelFiles, tmp_path: Path) -> None:
    worker = float16_xl(model_files, build_tiny_vae(tmp_path / "fp16-fix", seed=6))
    seen = decoder_inputs(worker)
    result = one(worker, model="xl", seeds=(3, 4), steps=3, guidance=6.0)
    assert len(result.images) == 2 and seen == [(torch.float16, 1)] * 2


# ---- single-file checkpoints --------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["sd1_file", "sd1_ckpt", "xl_file"])
def test_single_files_load_offline_and_match_their_folders(model_files: ModelFiles,
                                                           hub_cache: Path, kind: str) -> None:
    path = getattr(model_files, kind)
    folder = ("xl", model_files.xl) if kind == "xl_file" else ("tiny", model_files.tiny)
    worker = make_worker(model_files, ("file", path), ("folder", folder[1]))
    assert worker.specs["file"].sdxl == (kind == "xl_file")
    from_file = one(worker, model="file", seeds=(5,), steps=3)
    from_folder = one(worker, model="folder", seeds=(5,), steps=3)
    # The very same weights, bit for bit...
    for part in ("unet", "vae", "text_encoder", "text_encoder_2"):
        ours = getattr(worker.model("file").pipe, part, None)
        theirs = getattr(worker.model("folder").pipe, part, None)
        if ours is None:
            continue
        mine, other = ours.state_dict(), theirs.state_dict()
        assert mine.keys() == other.keys(), part
        assert all(torch.equal(mine[key], other[key]) for key in mine), part
    # ...but not always the same pictures to the last bit: a folder's weights are memory-mapped
    # at whatever offset they have in their file, and the CPU's matrix kernels round differently
    # for memory that is not 64-byte aligned (SDXL's `text_projection`, seen on some machines).
    assert difference(from_file.images[0], from_folder.images[0]) <= 1


def test_a_single_file_without_its_base_configs_fails_clearly(
        model_files: ModelFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    worker = make_worker(model_files, ("file", model_files.sd1_file))
    outcome = worker.run([make_request("job", model="file")])["job"]
    assert isinstance(outcome, EngineError)
    assert "configuration of its base model (SD 1.x)" in str(outcome)
    assert isinstance(worker.run([make_request("next")])["next"], GenerationResult)


# ---- switching models ---------------------------------------------------------------------------

def test_at_most_models_loaded_stay_and_switches_are_logged(
        model_files: ModelFiles, caplog: pytest.LogCaptureFixture) -> None:
    worker = make_worker(model_files, ("xl", model_files.xl), models_loaded=1)
    caplog.set_level(logging.INFO, logger="bot.engine.worker")
    one(worker, model="tiny", steps=2)
    assert worker.loaded_models() == ["tiny@cpu"]
    one(worker, model="xl", steps=2)
    assert worker.loaded_models() == ["xl@cpu"]  # on the CPU the device is the RAM
    messages = [record.getMessage() for record in caplog.records]
    assert any(m.startswith("unloaded model tiny in ") for m in messages), messages
    assert any(m.startswith("loaded model xl (SDXL) on cpu in ") for m in messages), messages

    two = make_worker(model_files, ("xl", model_files.xl), models_loaded=2)
    for name in ("tiny", "xl", "tiny"):
        one(two, model=name, steps=2)
    assert two.loaded_models() == ["xl@cpu", "tiny@cpu"]  # least recently used first


# ---- LoRA ---------------------------------------------------------------------------------------

def test_a_lora_changes_the_pictures_and_weight_zero_does_not(worker: Worker) -> None:
    plain = one(worker, seeds=(5,))
    with_lora = one(worker, seeds=(5,), loras=(("detail", 1.0),))
    assert mean_difference(plain, with_lora) > 0.5
    half = one(worker, seeds=(5,), loras=(("detail", 0.5),))
    assert 0 < mean_difference(plain, half) < mean_difference(plain, with_lora)
    zero = one(worker, seeds=(5,), loras=(("detail", 0.0),))
    assert difference(plain.images[0], zero.images[0]) == 0
    # after LoRA jobs, a job without one is exactly what it was before
    assert difference(plain.images[0], one(worker, seeds=(5,)).images[0]) == 0


def test_several_loras_at_once(worker: Worker) -> None:
    detail = one(worker, seeds=(6,), loras=(("detail", 1.0),))
    style = one(worker, seeds=(6,), loras=(("style", 1.0),))
    both = one(worker, seeds=(6,), loras=(("detail", 1.0), ("style", 1.0)))
    assert mean_difference(both, detail) > 0.5 and mean_difference(both, style) > 0.5
    # names match the files whatever their case
    again = one(worker, seeds=(6,), loras=(("DETAIL", 1.0),))
    assert difference(again.images[0], detail.images[0]) == 0


def test_adapters_are_loaded_once_and_again_when_the_file_changes(
        model_files: ModelFiles, caplog: pytest.LogCaptureFixture) -> None:
    worker = make_worker(model_files)
    caplog.set_level(logging.INFO, logger="bot.engine.worker")
    for weight in (1.0, 0.3, 1.0):
        one(worker, seeds=(1,), steps=2, loras=(("style", weight),))
    loads = [r for r in caplog.records if r.getMessage().startswith("loaded LoRA style ")]
    assert len(loads) == 1
    path = model_files.loras / "style.safetensors"
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    one(worker, seeds=(1,), steps=2, loras=(("style", 1.0),))
    loads = [r for r in caplog.records if r.getMessage().startswith("loaded LoRA style ")]
    assert len(loads) == 2


def test_lora_failures_are_the_jobs_own(worker: Worker) -> None:
    unknown = worker.run([make_request("job", loras=(("nope", 1.0),))])["job"]
    assert isinstance(unknown, EngineError) and "`nope` is not in LORA_DIR" in str(unknown)
    misfit = worker.run([make_request("job", loras=(("xl-detail", 1.0),))])["job"]
    assert isinstance(misfit, EngineError)
    assert str(misfit) == "LoRA `xl-detail` does not fit model `tiny` (tiny (random, for tests))"
    assert isinstance(worker.run([make_request("next")])["next"], GenerationResult)


def test_a_lora_on_sdxl(worker: Worker) -> None:
    plain = one(worker, model="xl", seeds=(2,), steps=3)
    lora = one(worker, model="xl", seeds=(2,), steps=3, loras=(("xl-detail", 1.0),))
    assert mean_difference(plain, lora) > 0.5


def test_only_jobs_with_the_same_loras_batch_together() -> None:
    base = make_request("a", loras=(("detail", 0.8),))
    assert base.batch_key() == replace(base, job_id="b").batch_key()
    assert base.batch_key() != replace(base, loras=(("detail", 0.5),)).batch_key()
    assert base.batch_key() != replace(base, loras=()).batch_key()


# ---- long prompts -------------------------------------------------------------------------------

def test_long_and_short_prompts_in_one_batch(worker: Worker) -> None:
    long = make_request("long", seeds=(8,), prompt=LONG)
    short = make_request("short", seeds=(8,), prompt="a red fox", user_key="other")
    together = run(worker, long, short)
    assert (together["long"].prompt_chunks, together["short"].prompt_chunks) == (3, 1)
    # each length ran in a call of its own, so neither was padded to the other
    for job_id, prompt in (("long", LONG), ("short", "a red fox")):
        alone = one(worker, seeds=(8,), prompt=prompt)
        assert difference(together[job_id].images[0], alone.images[0]) <= 2
    # the end of a long prompt matters
    changed = one(worker, seeds=(8,), prompt=LONG.rsplit(" ", 1)[0] + " sunny")
    assert mean_difference(together["long"], changed) > 0.1


def test_lora_tags_are_not_read_as_text(worker: Worker) -> None:
    tagged = one(worker, seeds=(4,), prompt="a red fox <lora:detail:0>",
                 loras=(("detail", 0.0),))
    plain = one(worker, seeds=(4,), prompt="a red fox")
    assert difference(tagged.images[0], plain.images[0]) == 0
    assert Image.open(io.BytesIO(tagged.images[0].png)).info["parameters"].startswith(
        "a red fox <lora:detail:0>\n")  # AUTOMATIC1111 keeps the tags in the prompt


# ---- turbo settings -----------------------------------------------------------------------------

@pytest.mark.parametrize(("sampler", "steps", "guidance"),
                         [("euler_a", 1, 0.0), ("euler_a", 4, 0.0), ("lcm", 4, 1.0)])
def test_few_steps_without_guidance(worker: Worker, sampler: str, steps: int,
                                    guidance: float) -> None:
    for model in ("tiny", "xl"):
        result = one(worker, model=model, seeds=(1, 2), sampler=sampler, steps=steps,
                     guidance=guidance, prompt=LONG, negative="blurry")
        assert len(result.images) == 2



class _Device:
    def __init__(self, kind: str) -> None:
        self.type = kind


class FakePipe:
    """Stands for a pipeline on a GPU this machine does not have: records where it is moved."""

    def __init__(self) -> None:
        self.device = _Device("cuda")

    def to(self, device: str) -> FakePipe:
        self.device = _Device(device)
        return self


def test_on_a_gpu_the_least_recently_used_move_to_ram(model_files: ModelFiles,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.engine import worker as worker_module

    worker = make_worker(model_files, *((name, "tiny") for name in "abcde"), models_loaded=2)
    worker.device = "cuda"
    loads: list[str] = []

    def load(spec: Any) -> Any:
        loads.append(spec.name)
        return worker_module._Loaded(spec, FakePipe(), None)

    monkeypatch.setattr(worker, "_load", load)
    monkeypatch.setattr(worker, "_free_memory", lambda: None)
    for name in "abc":
        worker.model(name)
    assert worker.loaded_models() == ["a@cpu", "b@cuda", "c@cuda"]
    worker.model("a")  # back from RAM: a copy, not a load from disk
    assert worker.loaded_models() == ["b@cpu", "c@cuda", "a@cuda"]
    for name in "de":
        worker.model(name)
    # two on the GPU, two waiting in RAM, the least recently used (b) dropped
    assert worker.loaded_models() == ["c@cpu", "a@cpu", "d@cuda", "e@cuda"]
    assert loads == ["a", "b", "c", "d", "e"]
