"""Making a pipeline fast on CUDA without changing its pictures.

Applied once when a model is loaded, in the worker thread (compiled graphs must be captured and
replayed on the thread that owns them):

- SDPA attention: diffusers' default processor on torch 2 (`AttnProcessor2_0`), kept as is;
- channels-last memory layout for the UNet and VAE (faster convolutions on tensor cores);
- fused QKV projections (one matmul instead of three) where the model allows it — not with
  LoRA adapters, which patch the separate projections;
- TF32 matmuls for the few float32 operations left;
- the VAE stays in float16; one that overflows there (SDXL's, `force_upcast` in its config)
  decodes in float32, one picture at a time (`Worker._decode`), unless SD_VAE gives the model
  an fp16-safe one;
- with `SD_COMPILE=1`, `torch.compile` of the UNet and the VAE decoder, warmed up at load time
  on the shapes most jobs use, so no user waits for a compilation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)


def optimise(pipe: Any, device: str, *, fuse_qkv: bool = True, compile: bool = False) -> list[str]:
    """Apply the optimisations that suit `device`; returns their names (for logs and benches)."""
    import torch

    applied: list[str] = []
    if device != "cuda":
        return applied
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    applied.append("tf32")
    for part in ("unet", "vae"):
        module = getattr(pipe, part, None)
        if module is not None:
            module.to(memory_format=torch.channels_last)
    applied.append("channels-last")
    if fuse_qkv and hasattr(pipe, "fuse_qkv_projections"):
        try:
            pipe.fuse_qkv_projections()
            applied.append("fused-qkv")
        except (ValueError, AttributeError, NotImplementedError) as error:
            log.info("QKV projections left unfused: %s", error)
    if compile:
        pipe.unet = torch.compile(pipe.unet, fullgraph=True)
        pipe.vae.decode = torch.compile(pipe.vae.decode, fullgraph=True)
        applied.append("compiled")
    return applied


def warm_up(pipe: Any, side: int, batches: Iterable[int], steps: int = 2) -> float:
    """Run the pipeline on the shapes users ask for most (the native square, each batch size),
    so compilation happens now; returns the seconds it took."""
    import torch

    started = time.perf_counter()
    for batch in batches:
        with torch.inference_mode():
            pipe(prompt=["warm up"] * batch, num_inference_steps=steps, width=side, height=side,
                 guidance_scale=7.0, output_type="pil")
    seconds = time.perf_counter() - started
    log.info("warmed up compiled graphs in %.1f s", seconds)
    return seconds
