"""The tiny models: small, randomly initialised pipelines built locally, with no download — `tiny`
(SD 1.x), `tiny-inpaint` (its inpainting checkpoint), `tiny-flux` (FLUX.1 [schnell]) and
`tiny-sd3` (SD 3.5, with its T5 encoder).

Each is saved with `save_pretrained` and loaded back through the same code as any local diffusers
folder, so tests and demos exercise the real loading path. Weights come from a fixed seed, so every
process that builds one gets the same model and the same pictures for the same seeds. Their
tokenizers are made here from small vocabularies: CLIP's of single characters, T5's a unigram
model of single characters (no sentencepiece file)."""

from __future__ import annotations

import json
import shutil
import string
import tempfile
from pathlib import Path
from typing import Any

TINY_NATIVE_SIDE = 128
# Model sources built here rather than loaded, and the family (`bot.engine.families`) each is of.
TINY_FAMILIES = {"tiny": "tiny", "tiny-inpaint": "tiny", "tiny-flux": "flux-schnell",
                 "tiny-sd3": "sd35-large"}
TINY_SOURCES = tuple(TINY_FAMILIES)
TINY_MARKER = "atelier-tiny.json"  # in a built folder: its version (and native side)
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
    if _built(folder):
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
        _save(pipe, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def build_tiny_inpaint(folder: Path, tiny: Path) -> Path:
    """A dedicated inpainting checkpoint for `tiny` (the pipeline in folder `tiny`) into `folder`:
    its text encoder, VAE and tokenizer, and a UNet of its own that also reads the mask and the
    masked picture (9 input channels), as real inpainting checkpoints do."""
    if _built(folder):
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
    _save(pipe, folder)
    return folder


def _built(folder: Path) -> bool:
    """Whether `folder` holds a tiny model of this version already."""
    marker = folder / TINY_MARKER
    return marker.exists() and json.loads(marker.read_text()).get("version") == _VERSION


def _save(pipe: object, folder: Path, **marked: object) -> None:
    """Save `pipe` into `folder` in one step (built aside, then renamed), with its marker."""
    staging = Path(tempfile.mkdtemp(prefix=f"{folder.name}-",
                                    dir=folder.parent if folder.parent.exists() else None))
    try:
        build = staging / "pipeline"
        pipe.save_pretrained(build)  # type: ignore[attr-defined]  # (untyped mixin method)
        (build / TINY_MARKER).write_text(json.dumps({"version": _VERSION, **marked}))
        if folder.exists():
            shutil.rmtree(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            build.rename(folder)
        except OSError:
            if not _built(folder):  # else another process finished the same build first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ---- FLUX.1 and SD 3.5 --------------------------------------------------------------------------

T5_CHARACTERS = string.ascii_letters + string.digits + string.punctuation


def t5_tokenizer() -> Any:
    """A T5 tokenizer (ids: `<pad>` 0, `</s>` 1, `<unk>` 2) whose pieces are single characters
    and the word start `▁`, so different words give different tokens."""
    from transformers import T5Tokenizer  # (the `tokenizers` one in transformers 5)

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [(character, -3.0) for character in T5_CHARACTERS]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=512)


def _clip_tokenizer(folder: Path) -> Any:
    from transformers import CLIPTokenizer

    write_tokenizer_files(folder)
    return CLIPTokenizer.from_pretrained(folder)


def _clip_config(vocab_size: int, **extra: Any) -> Any:
    from transformers import CLIPTextConfig

    # The end token is the tokenizer's: FLUX and SD 3 read the pooled embedding there.
    return CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32,
                          intermediate_size=64, num_attention_heads=4, num_hidden_layers=2,
                          vocab_size=vocab_size, max_position_embeddings=77, **extra)


def _t5_encoder(d_model: int, vocab_size: int) -> Any:
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=vocab_size, d_model=d_model, d_kv=8, d_ff=64,
                                   num_layers=2, num_heads=4,
                                   relative_attention_num_buckets=8)).eval()


def _vae16(shift_factor: float, scaling_factor: float) -> Any:
    """A 16-channel VAE, 1/8 of the picture, as FLUX's and SD 3's are."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=(16,) * 4, norm_num_groups=8, layers_per_block=1,
                         latent_channels=16, down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4, use_quant_conv=False,
                         use_post_quant_conv=False, shift_factor=shift_factor,
                         scaling_factor=scaling_factor, sample_size=TINY_NATIVE_SIDE)


def build_tiny_flux(folder: Path) -> Path:
    """A tiny FLUX.1 [schnell]-like pipeline (no guidance input) into `folder`. The sizes that
    must agree: the transformer reads 4× the VAE's channels (2×2 patches), T5's width
    (`joint_attention_dim`), CLIP's hidden width (`pooled_projection_dim`), and its rotary axes
    add up to its head width."""
    if _built(folder):
        return folder

    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel

    staging = Path(tempfile.mkdtemp(prefix="tiny-flux-"))
    try:
        tokenizer, tokenizer_2 = _clip_tokenizer(staging / "clip"), t5_tokenizer()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            pipe = FluxPipeline(
                transformer=FluxTransformer2DModel(
                    patch_size=1, in_channels=64, num_layers=1, num_single_layers=1,
                    attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                    pooled_projection_dim=32, guidance_embeds=False, axes_dims_rope=(4, 4, 8)),
                vae=_vae16(0.1159, 0.3611),
                text_encoder=CLIPTextModel(_clip_config(len(tokenizer))), tokenizer=tokenizer,
                text_encoder_2=_t5_encoder(32, len(tokenizer_2)), tokenizer_2=tokenizer_2,
                scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0),
            )
        # FLUX's configs say nothing of its area (1024² for the real ones): the marker does.
        _save(pipe, folder, native_side=TINY_NATIVE_SIDE)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def build_tiny_sd3(folder: Path) -> Path:
    """A tiny SD 3.5-like pipeline (two CLIP encoders with projections, and T5) into `folder`.
    Its transformer's positions reach 64 patches (1024 px) a side, room for upscales and pans."""
    if _built(folder):
        return folder

    import torch
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTextModelWithProjection

    staging = Path(tempfile.mkdtemp(prefix="tiny-sd3-"))
    try:
        tokenizer, tokenizer_3 = _clip_tokenizer(staging / "clip"), t5_tokenizer()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            clip = [CLIPTextModelWithProjection(_clip_config(len(tokenizer), projection_dim=32))
                    for _ in range(2)]
            pipe = StableDiffusion3Pipeline(
                transformer=SD3Transformer2DModel(
                    sample_size=TINY_NATIVE_SIDE // 8, patch_size=2, in_channels=16,
                    out_channels=16, num_layers=1, attention_head_dim=8, num_attention_heads=4,
                    caption_projection_dim=32, joint_attention_dim=64, pooled_projection_dim=64,
                    pos_embed_max_size=64),
                vae=_vae16(0.0609, 1.5305),
                text_encoder=clip[0], tokenizer=tokenizer, text_encoder_2=clip[1],
                tokenizer_2=tokenizer, text_encoder_3=_t5_encoder(64, len(tokenizer_3)),
                tokenizer_3=tokenizer_3, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
            )
        _save(pipe, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def build(source: str, cache: Path) -> Path:
    """The folder of the tiny model `source` under `cache`, built there first if needed."""
    if source == "tiny-inpaint":
        return build_tiny_inpaint(cache / "tiny-inpaint", build_tiny(cache / "tiny"))
    builders = {"tiny": build_tiny, "tiny-flux": build_tiny_flux, "tiny-sd3": build_tiny_sd3}
    return builders[source](cache / source)
