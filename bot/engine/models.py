"""Models: where they come from, which family they belong to, and loading them into a pipeline."""

from __future__ import annotations

import json
import logging
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.engine.tiny import TINY_NATIVE_SIDE

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


def model_name(source: str) -> str:
    """A short name for a model source: `tiny`, a file's stem, a folder's or repo's last part."""
    if source == "tiny":
        return "tiny"
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
        (length,) = struct.unpack("<Q", handle.read(8))
        if length > 100_000_000:
            raise ValueError(f"{path} does not look like a safetensors file")
        header = json.loads(handle.read(length))
    return [key for key in header if key != "__metadata__"]


def _family_from_folder(folder: Path, name: str) -> tuple[Family, bool]:
    index = _read_json(folder / "model_index.json")
    unet = _read_json(folder / "unet" / "config.json")
    vae = _read_json(folder / "vae" / "config.json")
    scheduler = _read_json(folder / "scheduler" / "scheduler_config.json")
    sdxl = "XL" in str(index.get("_class_name", ""))
    scale = 2 ** (len(vae.get("block_out_channels", [0, 0, 0, 0])) - 1)
    native = int(unet.get("sample_size", 64)) * scale
    if (folder / "atelier-tiny.json").exists():
        base = FAMILIES["tiny"]
    elif scheduler.get("_class_name") == "LCMScheduler" or "lcm" in name:
        base = FAMILIES["lcm"]
    elif "turbo" in name or "lightning" in name:
        base = FAMILIES["turbo"]
    elif sdxl:
        base = FAMILIES["sdxl"]
    elif unet.get("cross_attention_dim") == 1024:
        base = FAMILIES["sd2"]
    else:
        base = FAMILIES["sd1"]
    return Family(base.name, base.label, native, base.steps, base.guidance, base.sampler), sdxl


def _family_from_keys(keys: list[str], name: str) -> tuple[Family, bool]:
    sdxl = any(key.startswith("conditioner.embedders.1") for key in keys)
    if "turbo" in name or "lightning" in name:
        family = FAMILIES["turbo"]
    elif "lcm" in name:
        family = FAMILIES["lcm"]
    elif sdxl:
        family = FAMILIES["sdxl"]
    elif any(key.startswith("cond_stage_model.model.") for key in keys):
        family = FAMILIES["sd2"]
    else:
        family = FAMILIES["sd1"]
    return family, sdxl


def describe(name: str, source: str) -> ModelSpec:
    """Work out a model's family from its files where they are here, else from its name."""
    lowered = source.lower()
    if source == "tiny":
        return ModelSpec(name, source, FAMILIES["tiny"])
    path = Path(source).expanduser()
    if path.is_dir():
        family, sdxl = _family_from_folder(path, name + " " + lowered)
        return ModelSpec(name, source, family, sdxl)
    if path.suffix.lower() in SINGLE_FILE_SUFFIXES:
        if not path.is_file():
            raise FileNotFoundError(f"model file {source} does not exist")
        keys = _safetensors_keys(path) if path.suffix.lower() == ".safetensors" else []
        family, sdxl = _family_from_keys(keys, name + " " + lowered)
        return ModelSpec(name, source, family, sdxl)
    cached = _cached_hub_folder(source)
    if cached is not None:
        family, sdxl = _family_from_folder(cached, name + " " + lowered)
        return ModelSpec(name, source, family, sdxl)
    sdxl = "xl" in lowered
    if "turbo" in lowered or "lightning" in lowered:
        family = FAMILIES["turbo"]
        if sdxl and "turbo" not in lowered:
            family = Family("turbo", "turbo", 1024, 4, 0.0, "euler_a")
    elif "lcm" in lowered:
        family = FAMILIES["lcm"]
    elif sdxl:
        family = FAMILIES["sdxl"]
    elif "stable-diffusion-2" in lowered:
        family = FAMILIES["sd2"]
    else:
        family = FAMILIES["sd1"]
    return ModelSpec(name, source, family, sdxl)


def _cached_hub_folder(repo_id: str) -> Path | None:
    """The local snapshot of a hub model, if it was downloaded before."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(repo_id, "model_index.json")
    return Path(found).parent if isinstance(found, str) else None
