"""Making a pipeline fast without changing its pictures.

Applied once when a model is loaded, in the worker thread (compiled graphs must be captured and
replayed on the thread that owns them). On CUDA:

- SDPA attention: diffusers' default processor on torch 2 (`AttnProcessor2_0`), kept as is;
- channels-last memory layout for the UNet and VAE (faster convolutions on tensor cores);
- fused QKV projections (one matmul instead of three) where the model allows it — not with
  LoRA adapters, which patch the separate projections;
- TF32 matmuls for the few float32 operations left;
- the VAE stays in float16; one that overflows there (SDXL's, `force_upcast` in its config)
  decodes in float32, one picture at a time (`Worker._decode`), unless SD_VAE gives the model
  an fp16-safe one.

With `SD_COMPILE=1` (on any device), `torch.compile` of the UNet's forward and of the VAE's
decoder module, so that no user ever waits for a compilation:

- the graphs are shape-generic where the bot's shapes vary, marked deliberately: the batch (1 to
  twice MAX_BATCH rows, guidance doubling them), the latents' height and width (every aspect,
  uploads of any shape, upscales) and the prompt's length (75-token chunks); sizes are not
  "duck-typed" into equal symbols, and a batch of one shares the graph of larger ones;
- timesteps reach the UNet as float32 whatever the sampler makes (some make int64, which would
  be a graph of its own; the UNet turns them into float32 first thing anyway);
- the UNet always passes its upsamplers their output size (`num_upsamplers`, below): it does so
  by itself only for latent sides that do not divide by 2^upsamplers, and that branch would
  split every graph in three by the picture's aspect; nearest-neighbour upsampling to twice the
  size gives the same values either way;
- the VAE's decoder module is compiled, not `vae.decode`: a tiled decode (upscales) would be
  traced into one graph per tile layout, taking minutes on the first `Upscale (2x)`;
- LoRAs are merged into the compiled model's weights (`bot.engine.worker`), never added as
  layers, which would change the model's structure and so recompile it;
- the worker warms every model up through the real request path (`warm_up_requests`) when it
  loads it: each batch size, each aspect, long prompts, every sampler it takes, an upscale and
  an inpaint.

Only UNet models (SD 1.x, 2.x, SDXL and their few-step versions) are compiled; FLUX.1 and SD 3.5
run as they are.

Graphs are cached per code object and shared by every model of the same architecture, so the
limit on recompilations is raised with the number of models.
"""

from __future__ import annotations

import io
import logging
from typing import Any

from bot import limits
from bot.engine import canvas
from bot.engine.models import ModelSpec
from bot.engine.samplers import accepted
from bot.engine.types import GenerationRequest, Mode

log = logging.getLogger(__name__)

GRAPHS_PER_MODEL = 4  # of the UNet and the decoder, for batch ranges and dtypes
# Latent sides never divide by 2^62: the UNet always gives its upsamplers their output size.
ALWAYS_SIZED_UPSAMPLERS = 62
WARM_UP_STEPS = 2  # second-order samplers need two
# Prompts of two and three 75-token chunks whatever the tokenizer (each `BREAK` starts one), well
# within the cap: enough to warm up the dynamic prompt length.
LONG_PROMPTS = ("a lighthouse BREAK a stormy sea", "a lighthouse BREAK a cliff BREAK a stormy sea")


def optimise(pipe: Any, device: str, *, fuse_qkv: bool = True) -> list[str]:
    """Apply the speed-ups that suit `device`; returns their names (for logs and benches)."""
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
    return applied


def configure_compiler(models: int) -> None:
    """Process-wide settings of torch's compiler for the engine's graphs (see the module)."""
    import torch._dynamo
    import torch.fx.experimental._config as symbolic

    symbolic.use_duck_shape = False
    symbolic.backed_size_oblivious = True
    limit = max(8, GRAPHS_PER_MODEL * models)
    if torch._dynamo.config.recompile_limit < limit:
        torch._dynamo.config.recompile_limit = limit


def compile_pipeline(pipe: Any, backend: str = "inductor") -> None:
    """Compile the UNet's forward and the VAE decoder's, in place: `pipe.unet` stays the
    diffusers model, so everything that manages it (offloading, `from_pipe`, LoRAs) still
    sees what it expects. `backend` is torch.compile's; tests trace with `eager`, which makes
    the same graphs and guards without generating code."""
    import torch

    for part in ("unet", "vae", "text_encoder", "text_encoder_2"):
        module = getattr(pipe, part, None)
        if module is not None:
            # Inference only; and a parameter's requires_grad is part of a graph's guards, which
            # peft flips on the weights it wraps while a LoRA is merged.
            module.requires_grad_(False)
    unet = pipe.unet
    unet.num_upsamplers = ALWAYS_SIZED_UPSAMPLERS
    unet.forward = _unet_forward(torch.compile(unet.forward, backend=backend, fullgraph=True))
    decoder = pipe.vae.decoder
    decoder.forward = _decoder_forward(torch.compile(decoder.forward, backend=backend,
                                                     fullgraph=True))


def _unet_forward(compiled: Any) -> Any:
    import torch
    from torch._dynamo import maybe_mark_dynamic

    def forward(sample: Any, timestep: Any, encoder_hidden_states: Any, *args: Any,
                **kwargs: Any) -> Any:
        if isinstance(timestep, torch.Tensor) and timestep.dtype != torch.float32:
            timestep = timestep.float()
        for dim in (0, 2, 3):  # batch, latent height and width
            maybe_mark_dynamic(sample, dim)
        for dim in (0, 1):  # batch, prompt length
            maybe_mark_dynamic(encoder_hidden_states, dim)
        for value in (kwargs.get("timestep_cond"),
                      *(kwargs.get("added_cond_kwargs") or {}).values()):
            if isinstance(value, torch.Tensor):  # LCM's guidance, SDXL's pooled text and sizes
                maybe_mark_dynamic(value, 0)
        return compiled(sample, timestep, encoder_hidden_states, *args, **kwargs)

    return forward


def _decoder_forward(compiled: Any) -> Any:
    from torch._dynamo import maybe_mark_dynamic

    def forward(sample: Any, *args: Any, **kwargs: Any) -> Any:
        for dim in (2, 3):  # one picture at a time, of any size (or a tile of one)
            maybe_mark_dynamic(sample, dim)
        return compiled(sample, *args, **kwargs)

    return forward


def warm_up_requests(spec: ModelSpec, max_batch: int, inpainting: bool) -> list[GenerationRequest]:
    """What the bot asks of a model, once each, at two steps: every batch size with and without
    guidance, every aspect choice, long prompts, every sampler, a 2× upscale and an inpaint.
    `inpainting`: the model is a dedicated inpainting checkpoint, which only inpaints."""
    family = spec.family
    side = family.native_side
    square = (side, side)
    sizes = [canvas.size_for(_ratio(choice), side, family.multiple)
             for choice in limits.ASPECT_CHOICES]
    shapes: list[dict[str, Any]] = []
    for count in range(1, max_batch + 1):
        for guidance in (7.0, 0.0):  # guidance doubles the UNet's batch
            shapes.append({"seeds": tuple(range(count)), "guidance": guidance})
    shapes += [{"size": size} for size in sizes if size != square]
    shapes += [{"prompt": prompt} for prompt in LONG_PROMPTS]
    shapes += [{"sampler": name} for name in accepted(family) if name != family.sampler]
    shapes.append({"size": (2 * side, 2 * side), "mode": Mode.IMG2IMG, "strength": 0.3})
    if spec.inpaint is None:  # else a checkpoint of its own inpaints, warmed up when it loads
        shapes.append({"mode": Mode.INPAINT})
    return [_warm_up_request(spec, index, inpainting, **shape)
            for index, shape in enumerate(shapes)]


def _ratio(choice: str) -> float:
    width, height = choice.split(":")
    return int(width) / int(height)


def _warm_up_request(spec: ModelSpec, index: int, inpainting: bool, *,
                     seeds: tuple[int, ...] = (0,), guidance: float = 7.0,
                     size: tuple[int, int] | None = None, prompt: str = "warm up",
                     sampler: str | None = None, mode: Mode = Mode.TXT2IMG,
                     strength: float | None = None) -> GenerationRequest:
    side = spec.family.native_side
    width, height = size or (side, side)
    if inpainting:
        mode = Mode.INPAINT
    picture = box = None
    if mode is not Mode.TXT2IMG:
        picture = _grey_png(side // 2 if mode is Mode.INPAINT else side)
    if mode is Mode.INPAINT:
        box = f"{(width - side // 2) // 2},{(height - side // 2) // 2},{side // 2},{side // 2}"
    return GenerationRequest(
        job_id=f"warm-up-{spec.name}-{index}", user_key="", model=spec.name, prompt=prompt,
        negative="", width=width, height=height, steps=WARM_UP_STEPS, guidance=guidance,
        sampler=sampler or spec.family.sampler, seeds=seeds, mode=mode, init_image=picture,
        strength=strength, box=box)


def _grey_png(side: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (128, 128, 128)).save(buffer, format="PNG")
    return buffer.getvalue()
