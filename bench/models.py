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
    """The arithmetic of one image: the UNet at every step (twice with guidance) and the VAE
    decode, counted on the model's own modules at the run's size."""

    unet_macs: float  # one UNet call for one image
    vae_macs: float  # one decode
    calls: int  # UNet calls per image: steps, times 2 with guidance
    steps: int
    guided: bool
    latent: tuple[int, int]
    size: tuple[int, int]

    @property
    def total(self) -> float:
        return 2 * (self.calls * self.unet_macs + self.vae_macs)

    @property
    def formula(self) -> str:
        guidance = "2 (guidance) × " if self.guided else ""
        return (f"2 FLOP/MAC × ({guidance}{self.steps} steps × {self.unet_macs / 1e9:.2f} GMAC "
                f"(UNet at {self.latent[0]}×{self.latent[1]} latents, 77 tokens) + "
                f"{self.vae_macs / 1e9:.2f} GMAC (VAE decode at {self.size[0]}×{self.size[1]})) "
                f"= {_flop_text(self.total)}")


def _flop_text(flops: float) -> str:
    return f"{flops / 1e12:.1f} TFLOP" if flops >= 1e11 else f"{flops / 1e9:.2f} GFLOP"


def flops_per_image(pipe: Any, width: int, height: int, steps: int, guided: bool) -> ImageFlops:
    """Count the multiply-adds of `pipe`'s UNet and VAE decoder from their configurations, on
    meta tensors (no memory, no arithmetic), with torch's FLOP counter."""
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
