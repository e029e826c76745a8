"""Models for benchmarks, built from published configurations with random weights (no download).

Random weights run exactly as fast as trained ones: the arithmetic is the same."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Dense fp16 tensor-core peaks (fp32 accumulation, no sparsity), TFLOP/s, from NVIDIA's data
# sheets, by a part of the name torch reports; the first match wins.
DENSE_FP16_TFLOPS = (
    ("H200", 989.4),
    ("H100 PCIe", 756.5),
    ("H100 NVL", 835.0),
    ("H100", 989.4),  # SXM: "NVIDIA H100 80GB HBM3"
    ("A100", 312.0),
    ("L40S", 362.05),
    ("RTX 4090", 165.2),
)


def dense_fp16_peak(device_name: str) -> float | None:
    """The dense fp16 peak of the GPU torch calls `device_name`, if the table knows it."""
    return next((tflops for part, tflops in DENSE_FP16_TFLOPS if part in device_name), None)


@dataclass(frozen=True)
class ImageFlops:
    """The arithmetic of one image: the denoiser (UNet or transformer) at every step (twice with
    classifier-free guidance) and the VAE decode, counted on the model's own modules at the
    run's size."""

    unet_macs: float  # one denoiser call for one image
    vae_macs: float  # one decode
    calls: int  # denoiser calls per image: steps, times 2 with guidance
    steps: int
    guided: bool
    latent: tuple[int, int]
    size: tuple[int, int]
    denoiser: str = "UNet"
    tokens: int = 77  # the text sequence it attends to

    @property
    def total(self) -> float:
        return 2 * (self.calls * self.unet_macs + self.vae_macs)

    @property
    def formula(self) -> str:
        guidance = "2 (guidance) × " if self.guided else ""
        return (f"2 FLOP/MAC × ({guidance}{self.steps} steps × {self.unet_macs / 1e9:.2f} GMAC "
                f"({self.denoiser} at {self.latent[0]}×{self.latent[1]} latents, {self.tokens} "
                f"tokens) + {self.vae_macs / 1e9:.2f} GMAC (VAE decode at {self.size[0]}×"
                f"{self.size[1]})) = {_flop_text(self.total)}")


def _flop_text(flops: float) -> str:
    return f"{flops / 1e12:.1f} TFLOP" if flops >= 1e11 else f"{flops / 1e9:.2f} GFLOP"


def flops_per_image(pipe: Any, width: int, height: int, steps: int, guided: bool,
                    tokens: int = 256) -> ImageFlops:
    """Count the multiply-adds of `pipe`'s denoiser and VAE decoder from their configurations,
    on meta tensors (no memory, no arithmetic), with torch's FLOP counter. `tokens`: the T5
    sequence a FLUX or SD 3 transformer attends to (a UNet reads CLIP's 77)."""
    if getattr(pipe, "transformer", None) is not None:
        return _transformer_flops(pipe, width, height, steps, guided, tokens)
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    unet_config, vae_config = pipe.unet.config, pipe.vae.config
    scale = 2 ** (len(vae_config.block_out_channels) - 1)
    latent = (height // scale, width // scale)
    with torch.device("meta"):
        unet = type(pipe.unet).from_config(unet_config)
        vae = type(pipe.vae).from_config(vae_config)
        sample = torch.empty(1, unet_config.in_channels, *latent)
        text = torch.empty(1, 77, unet_config.cross_attention_dim)
        extra: dict[str, Any] = {}
        if unet_config.addition_embed_type == "text_time":  # SDXL: pooled text, sizes
            pooled = (unet_config.projection_class_embeddings_input_dim
                      - 6 * unet_config.addition_time_embed_dim)
            extra["added_cond_kwargs"] = {"text_embeds": torch.empty(1, pooled),
                                          "time_ids": torch.empty(1, 6)}
        with FlopCounterMode(display=False) as counter:
            unet(sample, torch.tensor(999.0), text, **extra)
        unet_macs = counter.get_total_flops() / 2
        with FlopCounterMode(display=False) as counter:
            vae.decode(torch.empty(1, vae_config.latent_channels, *latent))
        vae_macs = counter.get_total_flops() / 2
    return ImageFlops(unet_macs, vae_macs, steps * (2 if guided else 1), steps, guided, latent,
                      (width, height))


def _transformer_flops(pipe: Any, width: int, height: int, steps: int, guided: bool,
                       tokens: int) -> ImageFlops:
    """`flops_per_image` of FLUX.1 (its latents packed into 2×2 patches; guidance as an input,
    not a second pass) or SD 3 (77 CLIP tokens before T5's)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    config, vae_config = pipe.transformer.config, pipe.vae.config
    scale = 2 ** (len(vae_config.block_out_channels) - 1)
    latent = (height // scale, width // scale)
    flux = "guidance_embeds" in config
    with torch.device("meta"):
        transformer = type(pipe.transformer).from_config(config)
        vae = type(pipe.vae).from_config(vae_config)
        if flux:
            patches = (latent[0] // 2) * (latent[1] // 2)
            arguments: dict[str, Any] = dict(
                hidden_states=torch.empty(1, patches, config.in_channels),
                encoder_hidden_states=torch.empty(1, tokens, config.joint_attention_dim),
                pooled_projections=torch.empty(1, config.pooled_projection_dim),
                timestep=torch.empty(1), img_ids=torch.empty(patches, 3),
                txt_ids=torch.empty(tokens, 3),
                guidance=torch.empty(1) if config.guidance_embeds else None)
            guided = False  # [dev] reads its guidance; it makes no second pass
        else:
            tokens += 77
            arguments = dict(
                hidden_states=torch.empty(1, config.in_channels, *latent),
                encoder_hidden_states=torch.empty(1, tokens, config.joint_attention_dim),
                pooled_projections=torch.empty(1, config.pooled_projection_dim),
                timestep=torch.empty(1))
        with FlopCounterMode(display=False) as counter:
            transformer(**arguments)
        macs = counter.get_total_flops() / 2
        with FlopCounterMode(display=False) as counter:
            vae.decode(torch.empty(1, vae_config.latent_channels, *latent))
        vae_macs = counter.get_total_flops() / 2
    return ImageFlops(macs, vae_macs, steps * (2 if guided else 1), steps, guided, latent,
                      (width, height), "transformer", tokens)


def _tokenizer() -> Any:
    """A character-level CLIP tokenizer (the real BPE vocabulary needs a download)."""
    from transformers import CLIPTokenizer

    from bot.engine.tiny import write_tokenizer_files

    folder = Path(tempfile.mkdtemp(prefix="bench-tokenizer-"))
    write_tokenizer_files(folder)
    return CLIPTokenizer.from_pretrained(folder)


def _vae(sample_size: int, force_upcast: bool) -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
        block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, sample_size=sample_size,
        scaling_factor=0.18215 if not force_upcast else 0.13025, force_upcast=force_upcast,
    )


def _scheduler() -> Any:
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012,
                                  beta_schedule="scaled_linear", steps_offset=1,
                                  timestep_spacing="leading")


def _clip(hidden: int, layers: int, heads: int, intermediate: int, projection: bool) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(hidden_size=hidden, num_hidden_layers=layers,
                            num_attention_heads=heads, intermediate_size=intermediate,
                            vocab_size=49408, max_position_embeddings=77, projection_dim=hidden,
                            hidden_act="quick_gelu" if hidden == 768 else "gelu",
                            bos_token_id=0, eos_token_id=1, pad_token_id=1)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def sd15_pipeline(device: str, dtype: Any) -> Any:
    """Stable Diffusion 1.5 at full size: 860M-parameter UNet, CLIP ViT-L/14, the SD VAE."""
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    with torch.device(device):  # weights made where they will run: no slow CPU init
        unet = UNet2DConditionModel(
            sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768,
            attention_head_dim=8,
        )
        vae, text_encoder = _vae(512, False), _clip(768, 12, 12, 3072, False)
    pipe = StableDiffusionPipeline(
        unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=_tokenizer(),
        scheduler=_scheduler(), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    return pipe.to(device, dtype)


def sdxl_pipeline(device: str, dtype: Any) -> Any:
    """SDXL base at full size: 2.6B-parameter UNet, CLIP ViT-L and OpenCLIP bigG encoders."""
    import torch
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel

    with torch.device(device):
        unet = UNet2DConditionModel(
            sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=(320, 640, 1280),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20),
            cross_attention_dim=2048, use_linear_projection=True,
            addition_embed_type="text_time", addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816,
        )
        vae = _vae(1024, True)
        text_encoder = _clip(768, 12, 12, 3072, False)
        text_encoder_2 = _clip(1280, 32, 20, 5120, True)
    tokenizer = _tokenizer()
    pipe = StableDiffusionXLPipeline(
        unet=unet, vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
        tokenizer=tokenizer, tokenizer_2=tokenizer, scheduler=_scheduler(),
    )
    return pipe.to(device, dtype)


# ---- FLUX.1 and SD 3.5, from their published configurations ----------------------------------

def _vae16(shift_factor: float, scaling_factor: float) -> Any:
    """FLUX's and SD 3's VAE: SDXL's shape with 16 latent channels."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=16, layers_per_block=2,
        block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, sample_size=1024, use_quant_conv=False,
        use_post_quant_conv=False, shift_factor=shift_factor, scaling_factor=scaling_factor,
        force_upcast=True)


def _t5_xxl() -> Any:
    """T5 v1.1 XXL's encoder (4.8B parameters), FLUX's and SD 3's third text encoder."""
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(
        vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
        relative_attention_num_buckets=32, relative_attention_max_distance=128,
        feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-6, is_encoder_decoder=False))


def _built_on(device: str, dtype: Any, build: Any) -> Any:
    """`build()`'s pipeline, its weights made on `device` in `dtype` (fast on a GPU; no memory
    at all on `meta`, where only the configuration counts)."""
    import torch

    previous = torch.get_default_dtype()
    # (float16 is no default dtype torch allows: those weights are made in float32, then cast)
    torch.set_default_dtype(dtype if dtype in (torch.bfloat16, torch.float32) else torch.float32)
    try:
        with torch.device(device):
            pipe = build()
    finally:
        torch.set_default_dtype(previous)
    return pipe if device == "meta" else pipe.to(device, dtype)


def flux_pipeline(device: str, dtype: Any, dev: bool = False) -> Any:
    """FLUX.1 [schnell] (or [dev], which embeds its guidance) at full size: a 12B-parameter
    transformer, CLIP ViT-L/14 for the pooled text, T5 v1.1 XXL, a 16-channel VAE."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    from bot.engine.tiny import t5_tokenizer

    def build() -> Any:
        transformer = FluxTransformer2DModel(
            patch_size=1, in_channels=64, num_layers=19, num_single_layers=38,
            attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096,
            pooled_projection_dim=768, guidance_embeds=dev, axes_dims_rope=(16, 56, 56))
        scheduler = (FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True,
                                                     base_shift=0.5, max_shift=1.15)
                     if dev else FlowMatchEulerDiscreteScheduler(shift=1.0))
        return FluxPipeline(transformer=transformer, vae=_vae16(0.1159, 0.3611),
                            text_encoder=_clip(768, 12, 12, 3072, False), tokenizer=_tokenizer(),
                            text_encoder_2=_t5_xxl(), tokenizer_2=t5_tokenizer(),
                            scheduler=scheduler)

    return _built_on(device, dtype, build)


def sd35_pipeline(device: str, dtype: Any, medium: bool = False) -> Any:
    """SD 3.5 Large (an 8B-parameter MMDiT; or Medium, 2.5B with MMDiT-X's second attention in
    its first 13 blocks) at full size, with CLIP ViT-L, OpenCLIP bigG and T5 v1.1 XXL."""
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )

    from bot.engine.tiny import t5_tokenizer

    def build() -> Any:
        if medium:
            transformer = SD3Transformer2DModel(
                sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=24,
                attention_head_dim=64, num_attention_heads=24, caption_projection_dim=1536,
                joint_attention_dim=4096, pooled_projection_dim=2048, pos_embed_max_size=384,
                dual_attention_layers=tuple(range(13)), qk_norm="rms_norm")
        else:
            transformer = SD3Transformer2DModel(
                sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=38,
                attention_head_dim=64, num_attention_heads=38, caption_projection_dim=2432,
                joint_attention_dim=4096, pooled_projection_dim=2048, pos_embed_max_size=192,
                qk_norm="rms_norm")
        tokenizer = _tokenizer()
        return StableDiffusion3Pipeline(
            transformer=transformer, vae=_vae16(0.0609, 1.5305),
            text_encoder=_clip(768, 12, 12, 3072, True), tokenizer=tokenizer,
            text_encoder_2=_clip(1280, 32, 20, 5120, True), tokenizer_2=tokenizer,
            text_encoder_3=_t5_xxl(), tokenizer_3=t5_tokenizer(),
            scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0))

    return _built_on(device, dtype, build)


def parameters(pipe: Any) -> dict[str, int]:
    """Parameters of each of `pipe`'s models, by component name."""
    import torch

    return {name: sum(p.numel() for p in module.parameters())
            for name, module in pipe.components.items() if isinstance(module, torch.nn.Module)}


@dataclass(frozen=True)
class Shape:
    """An SD-shaped model between `tiny` and full size, for benchmarks on the CPU."""

    side: int  # native picture size
    unet_channels: tuple[int, ...]
    layers_per_block: int
    text_width: int

    @property
    def key(self) -> str:
        channels = "-".join(str(c) for c in self.unet_channels)
        return f"{self.side}_{channels}_{self.layers_per_block}_{self.text_width}"


# 4 images at 128² and 20 steps take a second or two on one core: a GPU job's cost, on a CPU.
LOOP_SHAPE = Shape(128, (64, 128, 128), 1, 128)
# One image at 256² and 10 steps takes about 2 s on one core: worth a worker process of its own.
SCALE_SHAPE = Shape(256, (64, 128, 256), 2, 256)


def sd_like_pipeline(shape: Shape) -> Any:
    """A randomly initialised SD-style pipeline of `shape` (the same weights every time)."""
    import torch
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel

    depth = len(shape.unet_channels)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        unet = UNet2DConditionModel(
            sample_size=shape.side // 8, in_channels=4, out_channels=4,
            layers_per_block=shape.layers_per_block, block_out_channels=shape.unet_channels,
            down_block_types=("CrossAttnDownBlock2D",) * (depth - 1) + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (depth - 1),
            cross_attention_dim=shape.text_width, attention_head_dim=8,
        )
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
            block_out_channels=(32, 64, 64, 64), down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4, sample_size=shape.side,
            norm_num_groups=16,
        )
        text_encoder = _clip(shape.text_width, 2, 4, 2 * shape.text_width, False)
    return StableDiffusionPipeline(
        unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=_tokenizer(),
        scheduler=_scheduler(), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )


def saved_sd_like(cache: Path, shape: Shape) -> Path:
    """`sd_like_pipeline(shape)` as a diffusers folder under `cache` (built once), so the bot
    loads it like any local model (`SD_MODEL=<folder>`)."""
    folder = cache / f"bench-{shape.key}"
    if not (folder / "model_index.json").exists():
        pipe = sd_like_pipeline(shape)
        pipe.save_pretrained(folder)
        parameters = sum(p.numel() for p in pipe.unet.parameters())
        print(f"built a benchmark model in {folder} (UNet: {parameters / 1e6:.0f} M parameters)")
    return folder
