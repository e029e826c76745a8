"""Model families detected from configs, single files' tensor names, the hub cache, or names."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

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
    assert (turbo.family.name, turbo.family.label) == ("turbo", "SDXL turbo")
    assert (turbo.family.steps, turbo.family.guidance, turbo.family.sampler) == (4, 0.0, "euler_a")
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
        ("dreamshaperXL_lightning.safetensors", ["conditioner.embedders.1.model.x"], "turbo",
         "SDXL turbo", 1024, True),
        ("sd_xl_turbo_1.0.safetensors", ["conditioner.embedders.1.model.x"], "turbo",
         "SDXL turbo", 512, True),
        ("sd_turbo.safetensors", ["cond_stage_model.model.transformer.x"], "turbo",
         "SD 2.x turbo", 512, False),
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
        ("ByteDance/SDXL-Lightning", "turbo", 1024, True),
        ("SimianLuo/LCM_Dreamshaper_v7", "lcm", 512, False),
    ],
)
def test_hub_models_never_downloaded_are_judged_by_name(repo: str, family: str, side: int,
                                                        sdxl: bool) -> None:
    spec = describe("m", repo)
    assert (spec.family.name, spec.family.native_side, spec.sdxl) == (family, side, sdxl)
