"""Models for benchmarks, built from published configurations with random weights (no download).

Random weights run exactly as fast as trained ones: the arithmetic is the same."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# FLOPs of one 30-step, classifier-free-guided SD 1.5 image at 512² (UNet ×2 per step + VAE
# decode), the figure used for the share of peak.
SD15_TFLOP_PER_IMAGE = 50.7
H100_DENSE_FP16_TFLOPS = 990.0


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
