"""Image references through an IP-Adapter (`SD_IP_ADAPTER`): `reference` with `--iw` and
`--sref`/`--sw`, and `/blend`'s pictures.

The adapter is attached to a model's UNet for the batches that use references and taken off
again for a batch without any: while attached, every call of the model must be given reference
embeddings, and taken off, the model draws exactly as it did before. Its weights and its image
encoder stay in memory, so attaching it again is quick.

Each job's pictures are encoded on their own and its rows put together for the call (negative
rows first, as the pipeline orders them), so the jobs of one call each keep their references;
several pictures of one job (a blend) become more image tokens side by side, which mixes them."""

from __future__ import annotations

import logging
import math
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bot.engine.adapters import AdapterConfig
from bot.engine.pictures import decode_picture
from bot.engine.types import EngineError, GenerationRequest, Reference

log = logging.getLogger(__name__)

# `--iw 1`: the adapter's scale where the picture steers about as much as the prompt (IP-Adapter's
# authors suggest 0.5 with a text prompt, 1.0 with none); `--iw` multiplies it, up to 3.
IMAGE_SCALE = 0.6
# `--sw 100`: a style reference's scale on the layers that carry style (InstantStyle); `--sw`
# grows it as its square root, so that 1000 is strong (×3.2) rather than ten times over.
STYLE_SCALE = 1.0
DEFAULT_STYLE_WEIGHT = 100.0


def adapter_scale(reference: Reference, unet: Any) -> float | dict[str, Any]:
    """The scale `set_ip_adapter_scale` takes for `reference` on `unet`: one number for an
    image reference; for a style reference, InstantStyle's choice, the adapter only in the
    middle attention layer of the first up block that has any (SDXL's `up_blocks.0.attentions.1`),
    where style rather than content is drawn."""
    scale = IMAGE_SCALE * reference.weight
    if reference.style is None:
        return scale
    style = STYLE_SCALE * math.sqrt(reference.style / DEFAULT_STYLE_WEIGHT) * reference.weight
    for number, block in enumerate(unet.up_blocks):
        layers = len(getattr(block, "attentions", None) or ())
        if layers:
            chosen = 1 if layers > 1 else 0
            return {"up": {f"block_{number}": [style if i == chosen else 0.0
                                               for i in range(layers)]}}
    return style


def _source_parts(source: str) -> tuple[Path | None, str, str, str]:
    """(folder, repo, subfolder, file name) of an `SD_IP_ADAPTER` source: a folder holding one
    adapter `.safetensors` and `image_encoder/`, or a hub `repo/subfolder/file.safetensors`."""
    path = Path(source).expanduser()
    if path.is_dir():
        files = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin"))
        if len(files) != 1:
            raise EngineError("The IP-Adapter folder (SD_IP_ADAPTER) must hold exactly one "
                              "adapter file and image_encoder/")
        return path, "", "", files[0].name
    parts = source.strip("/").split("/")
    if len(parts) < 3:
        raise EngineError("SD_IP_ADAPTER must name a folder or a hub "
                          "repo/subfolder/file.safetensors")
    return None, "/".join(parts[:2]), "/".join(parts[2:-1]), parts[-1]


class ReferenceModels:
    """The IP-Adapters of `SD_IP_ADAPTER`, loaded on first use. Used on the worker's thread."""

    def __init__(self, config: AdapterConfig, device: str, dtype: Any) -> None:
        self.config = config
        self.device = device
        self.dtype = dtype
        self._loaded: dict[str, tuple[dict[str, Any], Any]] = {}  # source → weights, encoder
        # which adapter each UNet has attached (by the UNet: every pipeline of a model shares it)
        self._attached: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()

    def use(self, pipe: Any, arch: str, wanted: bool) -> None:
        """Attach `arch`'s adapter to `pipe` (if it is not already) when `wanted`, else take any
        adapter off."""
        source = self.config.ip_adapter(arch) if wanted else None
        if wanted and source is None:
            raise EngineError("No IP-Adapter is set up for this model (SD_IP_ADAPTER)")
        attached = self._attached.get(pipe.unet)
        if attached == source:
            return
        if attached is not None:
            pipe.unload_ip_adapter()
            del self._attached[pipe.unet]
        if source is None:
            return
        weights, encoder = self._load(source)
        started = time.perf_counter()
        pipe.register_modules(image_encoder=encoder.to(pipe.device, pipe.dtype))
        pipe.load_ip_adapter(weights, subfolder=None, weight_name=None,
                             image_encoder_folder=None)
        self._attached[pipe.unet] = source
        log.debug("attached the IP-Adapter %s in %.2f s", source, time.perf_counter() - started)

    def _load(self, source: str) -> tuple[dict[str, Any], Any]:
        if source in self._loaded:
            return self._loaded[source]
        from transformers import CLIPVisionModelWithProjection

        started = time.perf_counter()
        folder, repo, subfolder, name = _source_parts(source)
        try:
            if folder is not None:
                file = folder / name
                encoder = CLIPVisionModelWithProjection.from_pretrained(
                    folder / "image_encoder", dtype=self.dtype)
            else:
                from huggingface_hub import hf_hub_download

                file = Path(hf_hub_download(repo, name, subfolder=subfolder or None))
                encoder = CLIPVisionModelWithProjection.from_pretrained(
                    repo, subfolder=f"{subfolder}/image_encoder".lstrip("/"), dtype=self.dtype)
            weights = _read_weights(file)
        except (OSError, ValueError) as error:
            log.error("cannot load the IP-Adapter %s: %s", source, error)
            raise EngineError("The IP-Adapter (SD_IP_ADAPTER) could not be loaded") from error
        self._loaded[source] = weights, encoder
        log.info("loaded the IP-Adapter %s in %.1f s", source, time.perf_counter() - started)
        return weights, encoder

    @staticmethod
    def set_scale(pipe: Any, reference: Reference) -> None:
        pipe.set_ip_adapter_scale(adapter_scale(reference, pipe.unet))

    @staticmethod
    def embeds(pipe: Any, request: GenerationRequest, guided: bool) -> Any:
        """The reference embeddings of `request`'s pictures: its negative row then its positive
        one when `guided` (classifier-free guidance), else its positive row."""
        import torch

        assert request.reference is not None
        pictures = [decode_picture(data, "reference picture")
                    for data in request.reference.pictures]
        with torch.inference_mode():
            (embeds,) = pipe.prepare_ip_adapter_image_embeds(
                [pictures], None, pipe._execution_device, 1, guided)
        return embeds


def give_embeds(pipe: Any, rows: Sequence[Any], guided: bool) -> dict[str, Any]:
    """The arguments that give a call's images these per-job reference rows (in order): every
    negative row, then every positive one.

    The pipelines repeat `ip_adapter_image_embeds` once per image of the call, as if one
    reference served the whole batch; rows of their own would then reach every image (folded
    into its image tokens). So this call's pipeline (made for it by `from_pipe`) is handed the
    rows as they are, already in the order the UNet takes them."""
    import torch

    if guided:
        negatives, positives = zip(*(row.chunk(2) for row in rows), strict=True)
        ready = [torch.cat([*negatives, *positives])]
    else:
        ready = [torch.cat(list(rows))]
    pipe.prepare_ip_adapter_image_embeds = lambda *args, **kwargs: ready
    return {"ip_adapter_image_embeds": ready}


def _read_weights(file: Path) -> dict[str, Any]:
    """An adapter file as the nested state dict `load_ip_adapter` takes."""
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        nested: dict[str, dict[str, Any]] = {"image_proj": {}, "ip_adapter": {}}
        for key, tensor in load_file(file).items():
            part, _, name = key.partition(".")
            if part in nested:
                nested[part][name] = tensor
        return nested
    import torch

    loaded = torch.load(file, map_location="cpu", weights_only=True)
    if not isinstance(loaded, dict) or "image_proj" not in loaded:
        raise ValueError(f"{file.name} is not an IP-Adapter")
    return loaded
