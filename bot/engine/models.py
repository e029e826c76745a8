"""Models: where they come from and which family (`bot.engine.families`) each belongs to, worked out
from a folder's configs, a single file's tensor names, or a hub repository's name."""

from __future__ import annotations

import json
import logging
import struct
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bot.engine.families import FAMILIES, FEW_STEP_WORDS, Architecture, Family, few_step
from bot.engine.tiny import TINY_FAMILIES, TINY_MARKER, TINY_SOURCES

__all__ = ["FAMILIES", "SINGLE_FILE_SUFFIXES", "Architecture", "Family", "ModelSpec", "describe",
           "model_name"]

log = logging.getLogger(__name__)

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")


@dataclass(frozen=True)
class ModelSpec:
    """A model users can pick by `name`."""

    name: str
    source: str
    family: Family
    sdxl: bool = False  # needs the SDXL pipeline (two text encoders)
    inpaint: str | None = None  # source of a dedicated inpainting checkpoint (SD_INPAINT_MODELS)
    vae: str | None = None  # source of a VAE that replaces the model's own (SD_VAE)
    dtype: str | None = None  # its SD_DTYPE entry, where it has one of its own


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
# Turbo models trained at 512² although their architecture's usual area is larger.
_SMALL_TURBO_WORDS = ("sd_xl_turbo", "sdxl-turbo", "sdxl_turbo", "sd_turbo", "sd-turbo")
# Tensor names that single-file FLUX.1 and SD 3 checkpoints hold (in the original layout, also
# under ComfyUI's `model.diffusion_model.`).
_DIFFUSION_PREFIX = "model.diffusion_model."
SD35_LARGE_LAYERS = 38  # SD 3.5 Large's joint blocks (SD 3 and 3.5 Medium have 24)


def _family(arch: str, distilled: str | None, native: int | None, hint: str) -> Family:
    """The defaults for an SD model: its architecture's, or a few-step model's."""
    if distilled is None:
        base = FAMILIES[arch]
        return replace(base, native_side=native or base.native_side)
    base = few_step(FAMILIES[distilled], hint)
    if native is None:
        small = distilled == "turbo" and any(word in hint for word in _SMALL_TURBO_WORDS)
        native = 512 if small else _NATIVE[arch]
    # `SDXL-Turbo`, `SDXL-Lightning` as their makers write them; `SD 1.x LCM`
    joiner = "-" if arch == "sdxl" and distilled in ("turbo", "lightning") else " "
    return replace(base, label=f"{_ARCH_LABELS[arch]}{joiner}{base.label}", native_side=native)


def _distilled(hint: str, scheduler: dict[str, Any], unet: dict[str, Any]) -> str | None:
    """The few-step family of a model distilled to run in a few steps (`lcm`, `turbo`,
    `lightning`, `hyper`), from its configuration where it tells (an LCM scheduler, the guidance
    embedding of LCM UNets), else its name."""
    if scheduler.get("_class_name") == "LCMScheduler" or unet.get("time_cond_proj_dim"):
        return "lcm"
    return next((family for word, family in FEW_STEP_WORDS if word in hint), None)


def _flux(guidance_embeds: bool, hint: str) -> Family:
    """FLUX.1 [dev] embeds its guidance scale; [schnell] has no guidance input."""
    dev = guidance_embeds and "schnell" not in hint
    return FAMILIES["flux-dev" if dev else "flux-schnell"]


def _sd3(layers: int, dual_attention: bool, hint: str) -> Family:
    """SD 3.5 Medium has a second attention in its first blocks (MMDiT-X); SD 3.5 Large has 38
    blocks (its Turbo the same, told by its name); SD 3 Medium 24."""
    if dual_attention:
        return FAMILIES["sd35-medium"]
    if layers >= SD35_LARGE_LAYERS:
        return FAMILIES["sd35-large-turbo" if "turbo" in hint else "sd35-large"]
    return FAMILIES["sd3-medium"]


def _family_from_folder(folder: Path, hint: str) -> tuple[Family, bool]:
    index = _read_json(folder / "model_index.json")
    pipeline = str(index.get("_class_name", ""))
    vae = _read_json(folder / "vae" / "config.json")
    scale = 2 ** (len(vae.get("block_out_channels", [0, 0, 0, 0])) - 1)
    tiny = _read_json(folder / TINY_MARKER)
    if pipeline.startswith(("Flux", "StableDiffusion3")):
        transformer = _read_json(folder / "transformer" / "config.json")
        if pipeline.startswith("Flux"):
            family = _flux(bool(transformer.get("guidance_embeds")), hint)
        else:
            family = _sd3(int(transformer.get("num_layers", 0)),
                          bool(transformer.get("dual_attention_layers")), hint)
        sample = transformer.get("sample_size")  # FLUX's says nothing of its area
        native = tiny.get("native_side") or (int(sample) * scale if sample else None)
        return replace(family, native_side=int(native or family.native_side)), False
    unet = _read_json(folder / "unet" / "config.json")
    scheduler = _read_json(folder / "scheduler" / "scheduler_config.json")
    sdxl = "XL" in pipeline or unet.get("addition_embed_type") == "text_time"
    native = int(unet.get("sample_size", 64)) * scale
    if tiny:
        return replace(FAMILIES["tiny"], native_side=native), False
    if sdxl:
        arch = "sdxl"
    elif unet.get("cross_attention_dim") == 1024:
        arch = "sd2"
    else:
        arch = "sd1"
    return _family(arch, _distilled(hint, scheduler, unet), native, hint), sdxl


def _family_from_keys(keys: list[str], hint: str) -> tuple[Family, bool]:
    """From a single file's tensor names: FLUX.1 has `double_blocks` (and [dev] `guidance_in`),
    SD 3 `joint_blocks`; SDXL has a second text encoder (OpenCLIP bigG) under
    `conditioner.embedders.1`, SD 2.x one OpenCLIP encoder under `cond_stage_model.model`."""
    bare = [key.removeprefix(_DIFFUSION_PREFIX) for key in keys]
    if any(key.startswith("double_blocks.") for key in bare):
        return _flux(any(key.startswith("guidance_in.") for key in bare), hint), False
    if any(key.startswith("joint_blocks.") for key in bare):
        layers = {key.split(".")[1] for key in bare if key.startswith("joint_blocks.")}
        dual = any(".x_block.attn2." in key for key in bare)
        return _sd3(len(layers), dual, hint), False
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
    if "flux" in lowered:
        return _flux("schnell" not in lowered, hint), False
    if any(word in lowered for word in ("stable-diffusion-3.5", "sd3.5", "sd35")):
        medium = "medium" in lowered
        return _sd3(0 if medium else SD35_LARGE_LAYERS, medium, hint), False
    if any(word in lowered for word in ("stable-diffusion-3", "sd3")):
        return FAMILIES["sd3-medium"], False
    sdxl = "xl" in lowered
    arch = "sdxl" if sdxl else "sd2" if "stable-diffusion-2" in lowered else "sd1"
    return _family(arch, _distilled(hint, {}, {}), None, hint), sdxl


def _tiny(source: str) -> Family:
    """The family of a model built here (`tiny`, `tiny-flux`…): its kind's, at the tiny area."""
    family = FAMILIES[TINY_FAMILIES[source]]
    if family.name == "tiny":
        return family
    return replace(family, label=f"{family.label} (tiny, random)",
                   native_side=FAMILIES["tiny"].native_side)


def describe(name: str, source: str) -> ModelSpec:
    """Work out a model's family from its files where they are here, else from its name."""
    if source in TINY_SOURCES:
        return ModelSpec(name, source, _tiny(source))
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
