"""The `tiny` model: a small, randomly initialised SD pipeline built locally, with no download.

It is saved with `save_pretrained` and loaded back through the same code as any local diffusers
folder, so tests and demos exercise the real loading path. Weights come from a fixed seed, so every
process that builds it gets the same model and the same pictures for the same seeds."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

TINY_NATIVE_SIDE = 128
TINY_SOURCES = ("tiny", "tiny-inpaint")  # model sources built here rather than loaded
_VERSION = "1"  # bump when the architecture below changes, to rebuild cached copies


def write_tokenizer_files(folder: Path) -> None:
    """A character-level CLIP vocabulary, so different words give different tokens."""
    from tokenizers import pre_tokenizers

    characters = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for character in characters:
            vocab.setdefault(character + suffix, len(vocab))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"model_max_length": 77, "tokenizer_class": "CLIPTokenizer"}), encoding="utf-8"
    )


def build_tiny(folder: Path) -> Path:
    """Build the tiny pipeline into `folder` (if not there already) and return the folder."""
    marker = folder / "atelier-tiny.json"
    if marker.exists() and json.loads(marker.read_text()).get("version") == _VERSION:
        return folder

    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    staging = Path(tempfile.mkdtemp(prefix="tiny-", dir=folder.parent if folder.parent.exists()
                                    else None))
    try:
        write_tokenizer_files(staging / "_tokenizer")
        tokenizer = CLIPTokenizer.from_pretrained(staging / "_tokenizer")
        with torch.random.fork_rng():
            torch.manual_seed(0)
            unet = UNet2DConditionModel(
                sample_size=TINY_NATIVE_SIDE // 8,
                in_channels=4,
                out_channels=4,
                block_out_channels=(32, 64),
                layers_per_block=1,
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                cross_attention_dim=32,
                attention_head_dim=4,
                norm_num_groups=8,
            )
            # Four VAE blocks: latents are 1/8 of the image, as with real models.
            vae = AutoencoderKL(
                block_out_channels=(16, 16, 16, 16),
                in_channels=3,
                out_channels=3,
                down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4,
                latent_channels=4,
                layers_per_block=1,
                norm_num_groups=8,
                sample_size=TINY_NATIVE_SIDE,
            )
            text_encoder = CLIPTextModel(
                CLIPTextConfig(
                    bos_token_id=0,
                    eos_token_id=1,
                    pad_token_id=1,
                    hidden_size=32,
                    intermediate_size=64,
                    num_attention_heads=4,
                    num_hidden_layers=2,
                    vocab_size=len(tokenizer),
                    max_position_embeddings=77,
                    projection_dim=32,
                )
            )
        scheduler = EulerDiscreteScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            num_train_timesteps=1000,
            steps_offset=1,
            timestep_spacing="leading",
        )
        pipe = StableDiffusionPipeline(
            unet=unet,
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        build = staging / "pipeline"
        pipe.save_pretrained(build)  # type: ignore[attr-defined]  # (untyped mixin method)
        (build / "atelier-tiny.json").write_text(json.dumps({"version": _VERSION}))
        if folder.exists():
            shutil.rmtree(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            build.rename(folder)
        except OSError:
            if not marker.exists():  # else another process finished the same build first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def build_tiny_inpaint(folder: Path, tiny: Path) -> Path:
    """A dedicated inpainting checkpoint for `tiny` (the pipeline in folder `tiny`) into `folder`:
    its text encoder, VAE and tokenizer, and a UNet of its own that also reads the mask and the
    masked picture (9 input channels), as real inpainting checkpoints do."""
    marker = folder / "atelier-tiny.json"
    if marker.exists() and json.loads(marker.read_text()).get("version") == _VERSION:
        return folder

    import torch
    from diffusers import (
        StableDiffusionInpaintPipeline,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )

    base = StableDiffusionPipeline.from_pretrained(tiny)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        unet = UNet2DConditionModel.from_config({**base.unet.config, "in_channels": 9})
    pipe = StableDiffusionInpaintPipeline(
        unet=unet, vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer,
        scheduler=base.scheduler, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    staging = Path(tempfile.mkdtemp(prefix="tiny-inpaint-",
                                    dir=folder.parent if folder.parent.exists() else None))
    try:
        build = staging / "pipeline"
        pipe.save_pretrained(build)  # type: ignore[attr-defined]  # (untyped mixin method)
        (build / "atelier-tiny.json").write_text(json.dumps({"version": _VERSION}))
        if folder.exists():
            shutil.rmtree(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            build.rename(folder)
        except OSError:
            if not marker.exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder
