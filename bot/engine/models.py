"""Models: where they come from, which family they belong to, and loading them into a pipeline."""

from __future__ import annotations

import json
import logging
import struct
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bot.engine.tiny import TINY_NATIVE_SIDE, TINY_SOURCES

log = logging.getLogger(__name__)

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")


@dataclass(frozen=True)
class Family:
    """What a kind of model needs by default."""

    name: str
    label: str
    native_side: int
    steps: int
    guidance: float
    sampler: str
    multiple: int = 8


FAMILIES = {
    f.name: f
    for f in (
        Family("tiny", "tiny (random, for tests)", TINY_NATIVE_SIDE, 30, 7.0, "euler"),
        Family("sd1", "SD 1.x", 512, 30, 7.0, "dpm++_2m_karras"),
        Family("sd2", "SD 2.x", 768, 30, 7.0, "dpm++_2m_karras"),
        Family("sdxl", "SDXL", 1024, 30, 6.0, "dpm++_2m_karras"),
        Family("turbo", "turbo", 512, 4, 0.0, "euler_a"),
        Family("lcm", "LCM", 512, 4, 1.0, "lcm"),
    )
}


@dataclass(frozen=True)
class ModelSpec:
    """A model users can pick by `name`."""

    name: str
    source: str
    family: Family
    sdxl: bool = False  # needs the SDXL pipeline (two text encoders)
    inpaint: str | None = None  # source of a dedicated inpainting checkpoint (SD_INPAINT_MODELS)
    vae: str | None = None  # source of a VAE that replaces the model's own (SD_VAE)


def model_name(source: str) -> str:
    """A short name for a model source: `tiny`, a file's stem, a folder's or repo's last part."""
    if source in TINY_SOURCES:
        return source
    path = Path(source)
    stem = path.stem if path.suffix.lower() in SINGLE_FILE_SUFFIXES else path.name
    return stem.lower() or "default"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return {}


def _safetensors_keys(path: Path) -> list[str]:
    with path.open("rb") as handle:
        try:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > 100_000_000:
                raise ValueError
            header = json.loads(handle.read(length))
        except (struct.error, ValueError):
            raise ValueError(f"{path} does not look like a safetensors file") from None
    return [key for key in header if key != "__metadata__"]


def _ckpt_keys(path: Path) -> list[str]:
    """The tensor names of a `.ckpt`, memory-mapped so the weights are not read; none when the
    file is an old pickle that cannot be mapped (the family then comes from the name)."""
    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as error:  # many formats and pickle failures; the name is the fallback
        log.info("could not list the tensors of %s (%s); judging it by its name", path, error)
        return []
    while isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        checkpoint = checkpoint["state_dict"]
    return [str(key) for key in checkpoint] if isinstance(checkpoint, dict) else []


# Native sides by architecture, where no configuration says otherwise.
_NATIVE = {"sd1": 512, "sd2": 768, "sdxl": 1024}
_ARCH_LABELS = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL"}
_TURBO_WORDS = ("turbo", "lightning", "hyper")
# Turbo models trained at 512² although their architecture's usual area is larger.
_SMALL_TURBO_WORDS = ("sd_xl_turbo", "sdxl-turbo", "sdxl_turbo", "sd_turbo", "sd-turbo")


def _family(arch: str, distilled: str | None, native: int | None, hint: str) -> Family:
    """The defaults for a model: its architecture's, or a turbo/LCM model's few steps."""
    if distilled is None:
        base = FAMILIES[arch]
        return replace(base, native_side=native or base.native_side)
    base = FAMILIES[distilled]
    if native is None:
        small = distilled == "turbo" and any(word in hint for word in _SMALL_TURBO_WORDS)
        native = 512 if small else _NATIVE[arch]
    return replace(base, label=f"{_ARCH_LABELS[arch]} {base.label}", native_side=native)


def _distilled(hint: str, scheduler: dict[str, Any], unet: dict[str, Any]) -> str | None:
    """`lcm` or `turbo` for models distilled to run in a few steps, from their configuration
    where it tells (an LCM scheduler, the guidance embedding of LCM UNets), else their name."""
    if scheduler.get("_class_name") == "LCMScheduler" or unet.get("time_cond_proj_dim"):
        return "lcm"
    if "lcm" in hint:
        return "lcm"
    if any(word in hint for word in _TURBO_WORDS):
        return "turbo"
    return None


def _family_from_folder(folder: Path, hint: str) -> tuple[Family, bool]:
    index = _read_json(folder / "model_index.json")
    unet = _read_json(folder / "unet" / "config.json")
    vae = _read_json(folder / "vae" / "config.json")
    scheduler = _read_json(folder / "scheduler" / "scheduler_config.json")
    sdxl = ("XL" in str(index.get("_class_name", ""))
            or unet.get("addition_embed_type") == "text_time")
    scale = 2 ** (len(vae.get("block_out_channels", [0, 0, 0, 0])) - 1)
    native = int(unet.get("sample_size", 64)) * scale
    if (folder / "atelier-tiny.json").exists():
        return replace(FAMILIES["tiny"], native_side=native), False
    if sdxl:
        arch = "sdxl"
    elif unet.get("cross_attention_dim") == 1024:
        arch = "sd2"
    else:
        arch = "sd1"
    return _family(arch, _distilled(hint, scheduler, unet), native, hint), sdxl


def _family_from_keys(keys: list[str], hint: str) -> tuple[Family, bool]:
    """From a single file's tensor names: SDXL has a second text encoder (OpenCLIP bigG) under
    `conditioner.embedders.1`, SD 2.x one OpenCLIP encoder under `cond_stage_model.model`."""
    sdxl = any(key.startswith("conditioner.embedders.1") for key in keys)
    if sdxl:
        arch = "sdxl"
    elif any(key.startswith("cond_stage_model.model.") for key in keys):
        arch = "sd2"
    else:
        arch = "sd1"
    return _family(arch, _distilled(hint, {}, {}), None, hint), sdxl


def _family_from_name(repo_id: str, hint: str) -> tuple[Family, bool]:
    """A hub model never downloaded here: the best guess its repository's name allows."""
    lowered = repo_id.lower()
    sdxl = "xl" in lowered
    arch = "sdxl" if sdxl else "sd2" if "stable-diffusion-2" in lowered else "sd1"
    return _family(arch, _distilled(hint, {}, {}), None, hint), sdxl


def describe(name: str, source: str) -> ModelSpec:
    """Work out a model's family from its files where they are here, else from its name."""
    if source in TINY_SOURCES:
        return ModelSpec(name, source, FAMILIES["tiny"])
    path = Path(source).expanduser()
    # Names say "turbo" or "lcm" where configs cannot; only the model's own name counts, not
    # the folders it happens to sit in.
    hint = f"{name} {path.name}".lower()
    if path.is_dir():
        family, sdxl = _family_from_folder(path, hint)
        return ModelSpec(name, source, family, sdxl)
    if path.suffix.lower() in SINGLE_FILE_SUFFIXES:
        if not path.is_file():
            raise FileNotFoundError(f"model file {source} does not exist")
        safetensors = path.suffix.lower() == ".safetensors"
        keys = _safetensors_keys(path) if safetensors else _ckpt_keys(path)
        family, sdxl = _family_from_keys(keys, hint)
        return ModelSpec(name, source, family, sdxl)
    cached = _cached_hub_folder(source)
    if cached is not None:
        family, sdxl = _family_from_folder(cached, hint)
        return ModelSpec(name, source, family, sdxl)
    family, sdxl = _family_from_name(source, f"{name} {source}".lower())
    return ModelSpec(name, source, family, sdxl)


def _cached_hub_folder(repo_id: str) -> Path | None:
    """The local snapshot of a hub model, if it was downloaded before."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        found = try_to_load_from_cache(repo_id, "model_index.json")
    except ValueError:  # not a repo id (a path that does not exist, say)
        return None
    return Path(found).parent if isinstance(found, str) else None
