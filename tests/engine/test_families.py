"""Model families detected from configs, single files' tensor names, the hub cache, or names:
SD 1.x, 2.x, SDXL, their few-step versions (Turbo, Lightning, Hyper-SD, LCM), FLUX.1 and
SD 3 / 3.5."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from bot.engine.families import Architecture
from bot.engine.models import FAMILIES, describe
from tests.models import ModelFiles, seed_hub_cache


def test_the_tiny_model() -> None:
    spec = describe("tiny", "tiny")
    assert spec.family == FAMILIES["tiny"] and not spec.sdxl


def test_folders_are_judged_by_their_configs(model_files: ModelFiles) -> None:
    sd1 = describe("mine", str(model_files.tiny))
    assert (sd1.family.name, sd1.family.native_side, sd1.sdxl) == ("tiny", 128, False)
    xl = describe("xl", str(model_files.xl))
    # SDXL, and its native area is what its UNet and VAE say (16 latents × 8 here)
    assert (xl.family.name, xl.family.label, xl.family.native_side, xl.sdxl) == (
        "sdxl", "SDXL", 128, True)
    assert (xl.family.steps, xl.family.guidance) == (30, 6.0)


def _copy(folder: Path, target: Path, scheduler: str | None = None) -> Path:
    shutil.copytree(folder, target, ignore=shutil.ignore_patterns("*.safetensors"))
    (target / "atelier-tiny.json").unlink(missing_ok=True)
    if scheduler is not None:
        path = target / "scheduler" / "scheduler_config.json"
        config = json.loads(path.read_text())
        path.write_text(json.dumps({**config, "_class_name": scheduler}))
    return target


def test_turbo_and_lcm_folders(model_files: ModelFiles, tmp_path: Path) -> None:
    turbo = describe("fast", str(_copy(model_files.xl, tmp_path / "sdxl-turbo")))
    assert (turbo.family.name, turbo.family.label) == ("turbo", "SDXL-Turbo")
    assert (turbo.family.steps, turbo.family.guidance, turbo.family.sampler) == (4, 0.0, "euler_a")
    # distilled on the last timesteps, whichever sampler runs it
    assert turbo.family.scheduler_options == (("timestep_spacing", "trailing"),)
    assert turbo.family.native_side == 128  # from its config, not the name
    lcm = describe("quick", str(_copy(model_files.tiny, tmp_path / "quick", "LCMScheduler")))
    assert (lcm.family.name, lcm.family.label, lcm.family.guidance, lcm.family.sampler) == (
        "lcm", "SD 1.x LCM", 1.0, "lcm")
    plain = describe("plain", str(_copy(model_files.tiny, tmp_path / "plain")))
    assert (plain.family.name, plain.family.label, plain.family.native_side) == ("sd1", "SD 1.x",
                                                                                 128)


def test_single_files_are_judged_by_their_tensor_names(model_files: ModelFiles) -> None:
    for path in (model_files.sd1_file, model_files.sd1_ckpt):
        spec = describe("file", str(path))
        assert (spec.family.name, spec.family.native_side, spec.sdxl) == ("sd1", 512, False)
    xl = describe("file", str(model_files.xl_file))
    assert (xl.family.name, xl.family.native_side, xl.sdxl) == ("sdxl", 1024, True)


# SD 3's transformer blocks, as single files name them (38 in SD 3.5 Large, 24 in the Mediums)
_JOINT = [f"joint_blocks.{i}.x_block.attn.qkv.weight" for i in range(38)]


def _keys_file(path: Path, *keys: str) -> Path:
    save_file({key: torch.zeros(1) for key in keys}, path)
    return path


@pytest.mark.parametrize(
    ("filename", "keys", "family", "label", "side", "sdxl"),
    [
        ("anime.safetensors", ["cond_stage_model.transformer.text_model.x"], "sd1", "SD 1.x",
         512, False),
        ("v21.safetensors", ["cond_stage_model.model.transformer.x"], "sd2", "SD 2.x", 768, False),
        ("juggernaut.safetensors", ["conditioner.embedders.1.model.x"], "sdxl", "SDXL", 1024,
         True),
        ("dreamshaperXL_lightning.safetensors", ["conditioner.embedders.1.model.x"], "lightning",
         "SDXL-Lightning", 1024, True),
        ("sd_xl_turbo_1.0.safetensors", ["conditioner.embedders.1.model.x"], "turbo",
         "SDXL-Turbo", 512, True),
        ("sd_turbo.safetensors", ["cond_stage_model.model.transformer.x"], "turbo",
         "SD 2.x Turbo", 512, False),
        ("Hyper-SD15-8steps.safetensors", ["cond_stage_model.transformer.x"], "hyper",
         "SD 1.x Hyper-SD", 512, False),
        ("flux1-schnell.safetensors", ["double_blocks.0.img_attn.qkv.weight"], "flux-schnell",
         "FLUX.1 [schnell]", 1024, False),
        # ComfyUI's all-in-one files keep the transformer under `model.diffusion_model.`
        ("flux1-dev-fp8.safetensors", ["model.diffusion_model.double_blocks.0.img_attn.qkv.weight",
                                       "model.diffusion_model.guidance_in.in_layer.weight"],
         "flux-dev", "FLUX.1 [dev]", 1024, False),
        ("sd3.5_large.safetensors", [f"model.diffusion_model.{key}" for key in _JOINT[:38]],
         "sd35-large", "SD 3.5 Large", 1024, False),
        ("sd3.5_large_turbo.safetensors", _JOINT[:38], "sd35-large-turbo", "SD 3.5 Large Turbo",
         1024, False),
        ("sd3.5_medium.safetensors", [*_JOINT[:24], "joint_blocks.0.x_block.attn2.qkv.weight"],
         "sd35-medium", "SD 3.5 Medium", 1024, False),
        ("sd3_medium.safetensors", _JOINT[:24], "sd3-medium", "SD 3 Medium", 1024, False),
        ("lcm_dreamshaper.safetensors", ["cond_stage_model.transformer.x"], "lcm", "SD 1.x LCM",
         512, False),
    ],
)
def test_single_file_families(tmp_path: Path, filename: str, keys: list[str], family: str,
                              label: str, side: int, sdxl: bool) -> None:
    spec = describe("m", str(_keys_file(tmp_path / filename, *keys)))
    assert (spec.family.name, spec.family.label, spec.family.native_side, spec.sdxl) == (
        family, label, side, sdxl)


def test_a_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        describe("m", str(tmp_path / "gone.safetensors"))


def test_hub_models_use_their_cached_configs(model_files: ModelFiles, tmp_path: Path,
                                             hub_cache: Path) -> None:
    # the tiny SDXL's configs stand in for stabilityai/stable-diffusion-xl-base-1.0 here
    cached = describe("xl", "stabilityai/stable-diffusion-xl-base-1.0")
    assert (cached.family.name, cached.family.native_side, cached.sdxl) == ("sdxl", 128, True)
    seed_hub_cache(hub_cache, "someone/tiny-sd", _copy(model_files.tiny, tmp_path / "copy"))
    assert describe("m", "someone/tiny-sd").family.native_side == 128


@pytest.mark.parametrize(
    ("repo", "family", "side", "sdxl"),
    [
        ("stable-diffusion-v1-5/stable-diffusion-v1-5", "sd1", 512, False),
        ("stabilityai/stable-diffusion-2-1", "sd2", 768, False),
        ("stabilityai/stable-diffusion-xl-base-1.0", "sdxl", 1024, True),
        ("stabilityai/sdxl-turbo", "turbo", 512, True),
        ("ByteDance/SDXL-Lightning", "lightning", 1024, True),
        ("SimianLuo/LCM_Dreamshaper_v7", "lcm", 512, False),
        ("black-forest-labs/FLUX.1-schnell", "flux-schnell", 1024, False),
        ("black-forest-labs/FLUX.1-dev", "flux-dev", 1024, False),
        ("stabilityai/stable-diffusion-3.5-large", "sd35-large", 1024, False),
        ("stabilityai/stable-diffusion-3.5-large-turbo", "sd35-large-turbo", 1024, False),
        ("stabilityai/stable-diffusion-3.5-medium", "sd35-medium", 1024, False),
        ("stabilityai/stable-diffusion-3-medium-diffusers", "sd3-medium", 1024, False),
    ],
)
def test_hub_models_never_downloaded_are_judged_by_name(repo: str, family: str, side: int,
                                                        sdxl: bool) -> None:
    spec = describe("m", repo)
    assert (spec.family.name, spec.family.native_side, spec.sdxl) == (family, side, sdxl)


# ---- FLUX.1, SD 3 / 3.5 and few-step SDXL -------------------------------------------------------

def _configs(folder: Path, pipeline: str, **components: dict[str, object]) -> Path:
    """A diffusers folder holding only configurations, as a hub snapshot's would."""
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": pipeline}))
    for name, config in components.items():
        (folder / name).mkdir()
        (folder / name / "config.json").write_text(json.dumps(config))
    return folder


VAE16 = {"block_out_channels": [128, 256, 512, 512], "latent_channels": 16}


@pytest.mark.parametrize(
    ("pipeline", "transformer", "folder", "family"),
    [
        # (the published configurations' distinguishing fields)
        ("FluxPipeline", {"guidance_embeds": True, "num_layers": 19}, "FLUX.1-dev", "flux-dev"),
        ("FluxPipeline", {"guidance_embeds": False, "num_layers": 19}, "FLUX.1-schnell",
         "flux-schnell"),
        ("StableDiffusion3Pipeline", {"num_layers": 38, "sample_size": 128},
         "stable-diffusion-3.5-large", "sd35-large"),
        ("StableDiffusion3Pipeline", {"num_layers": 38, "sample_size": 128},
         "stable-diffusion-3.5-large-turbo", "sd35-large-turbo"),
        ("StableDiffusion3Pipeline", {"num_layers": 24, "sample_size": 128,
                                      "dual_attention_layers": list(range(13))},
         "stable-diffusion-3.5-medium", "sd35-medium"),
        ("StableDiffusion3Pipeline", {"num_layers": 24, "sample_size": 128},
         "stable-diffusion-3-medium-diffusers", "sd3-medium"),
    ],
)
def test_flux_and_sd3_folders_are_judged_by_their_configs(
        tmp_path: Path, pipeline: str, transformer: dict[str, object], folder: str,
        family: str) -> None:
    spec = describe("m", str(_configs(tmp_path / folder, pipeline, transformer=transformer,
                                      vae=VAE16)))
    assert spec.family == FAMILIES[family] and not spec.sdxl


def test_what_flux_and_sd35_take_and_refuse() -> None:
    schnell, dev = FAMILIES["flux-schnell"], FAMILIES["flux-dev"]
    large, turbo, medium = (FAMILIES["sd35-large"], FAMILIES["sd35-large-turbo"],
                            FAMILIES["sd35-medium"])
    assert [(f.native_side, f.multiple, f.steps, f.guidance, f.sampler)
            for f in (schnell, dev, large, turbo, medium)] == [
        (1024, 16, 4, 0.0, "euler"), (1024, 16, 28, 3.5, "euler"), (1024, 16, 28, 3.5, "euler"),
        (1024, 16, 4, 0.0, "euler"), (1024, 16, 40, 4.5, "euler")]
    # T5 reads the prompt: schnell up to 256 tokens, the others 512; no chunks, no `::` weights
    assert [(f.max_tokens, f.sentences, f.weights) for f in (schnell, dev, large)] == [
        (256, True, False), (512, True, False), (512, True, False)]
    assert (schnell.negative, dev.negative, large.negative) == (False, False, True)
    assert schnell.dtype == dev.dtype == large.dtype == "bfloat16"
    assert dev.limits_text() == ("prompts up to 512 T5 tokens · no negative prompt · "
                                 "no `::` weights")
    small = large.without_t5()
    assert (small.label, small.max_tokens, small.t5) == ("SD 3.5 Large without T5", 77, False)
    assert small.limits_text() == "prompts up to 77 CLIP tokens · no `::` weights"
    with pytest.raises(ValueError, match="needs its T5 text encoder"):
        dev.without_t5()


@pytest.mark.parametrize(
    ("filename", "family", "steps", "guidance", "options"),
    [
        ("sdxl_lightning_4step_unet.safetensors", "lightning", 4, 0.0, ()),
        ("sdxl_lightning_2step.safetensors", "lightning", 2, 0.0, ()),
        # the 1-step model predicts the picture itself
        ("sdxl_lightning_1step_x0.safetensors", "lightning", 1, 0.0,
         (("prediction_type", "sample"),)),
        ("Hyper-SDXL-8steps.safetensors", "hyper", 8, 0.0, ()),
        ("Hyper-SDXL-12steps-CFG.safetensors", "hyper", 12, 5.0, ()),
        ("hyper-sdxl.safetensors", "hyper", 8, 0.0, ()),
        ("sd_xl_turbo_1.0.safetensors", "turbo", 4, 0.0, ()),
    ],
)
def test_few_step_sdxl_models_get_their_steps_and_scheduler(
        tmp_path: Path, filename: str, family: str, steps: int, guidance: float,
        options: tuple[tuple[str, object], ...]) -> None:
    spec = describe("m", str(_keys_file(tmp_path / filename, "conditioner.embedders.1.model.x")))
    assert (spec.family.name, spec.family.steps, spec.family.guidance) == (family, steps, guidance)
    assert spec.family.scheduler_options == (("timestep_spacing", "trailing"), *options)
    assert spec.family.sampler == FAMILIES[family].sampler


def test_the_tiny_flux_and_sd3_models(tiny_flux_dir: Path, tiny_sd3_dir: Path) -> None:
    flux, sd3 = describe("flux", "tiny-flux"), describe("sd3", "tiny-sd3")
    assert (flux.family.name, flux.family.label, flux.family.native_side) == (
        "flux-schnell", "FLUX.1 [schnell] (tiny, random)", 128)
    assert (sd3.family.name, sd3.family.native_side) == ("sd35-large", 128)
    assert flux.family.arch is Architecture.FLUX and sd3.family.arch is Architecture.SD3
    # their folders, as any folder is judged: FLUX by its config (the marker holds its area)
    assert describe("m", str(tiny_flux_dir)).family == replace(FAMILIES["flux-schnell"],
                                                               native_side=128)
    assert describe("m", str(tiny_sd3_dir)).family.arch is Architecture.SD3
