"""Model files for tests, built locally: a tiny SDXL pipeline, single-file checkpoints, LoRAs (for
SD, for FLUX.1 in diffusers' and kohya's formats, for SD 3.5), and a Hugging Face cache entry
holding the configurations `from_single_file` looks up."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.engine.tiny import TINY_NATIVE_SIDE, write_tokenizer_files

# The repositories whose configurations diffusers' `from_single_file` uses for each architecture.
SD1_CONFIG_REPO = "stable-diffusion-v1-5/stable-diffusion-v1-5"
SDXL_CONFIG_REPO = "stabilityai/stable-diffusion-xl-base-1.0"
_SNAPSHOT = "0" * 40


def build_tiny_xl(folder: Path) -> Path:
    """A tiny random SDXL pipeline (two text encoders, `text_time` conditioning) in `folder`."""
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
    )

    write_tokenizer_files(folder / "_tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(folder / "_tokenizer")
    # Like SDXL's second tokenizer, which pads with `!` rather than the end token.
    tokenizer_2 = CLIPTokenizer.from_pretrained(folder / "_tokenizer", pad_token="!")
    shutil.rmtree(folder / "_tokenizer")

    def clip_config(hidden: int, layers: int) -> Any:
        return CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=hidden,
                              intermediate_size=2 * hidden, num_attention_heads=4,
                              num_hidden_layers=layers, vocab_size=len(tokenizer),
                              max_position_embeddings=77, projection_dim=32)

    with torch.random.fork_rng():
        torch.manual_seed(1)
        # Different widths, as in SDXL (768 and 1280): single-file loading tells the two encoders
        # apart by width, and detects SDXL by the second one's tenth layer.
        text_encoder = CLIPTextModel(clip_config(32, 2))
        text_encoder_2 = CLIPTextModelWithProjection(clip_config(48, 10))
        time_dim = 8
        unet = UNet2DConditionModel(
            sample_size=TINY_NATIVE_SIDE // 8,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32 + 48,
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=time_dim,
            projection_class_embeddings_input_dim=6 * time_dim + 32,
            norm_num_groups=8,
        )
        vae = AutoencoderKL(
            block_out_channels=(16, 16, 16, 16),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            latent_channels=4,
            layers_per_block=1,
            norm_num_groups=8,
            sample_size=TINY_NATIVE_SIDE,
        )
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012,
                                       beta_schedule="scaled_linear", steps_offset=1,
                                       timestep_spacing="leading")
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder,
                                     text_encoder_2=text_encoder_2, tokenizer=tokenizer,
                                     tokenizer_2=tokenizer_2, unet=unet, scheduler=scheduler,
                                     force_zeros_for_empty_prompt=True)
    pipe.save_pretrained(folder)
    return folder


def build_tiny_vae(folder: Path, seed: int, force_upcast: bool = False) -> Path:
    """A VAE for the tiny models (their architecture, other weights) as a diffusers folder, as
    SD_VAE takes it; by default one that says it is safe in float16, like SDXL's fp16 fix."""
    import torch
    from diffusers import AutoencoderKL

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        vae = AutoencoderKL(
            block_out_channels=(16, 16, 16, 16),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            latent_channels=4,
            layers_per_block=1,
            norm_num_groups=8,
            sample_size=TINY_NATIVE_SIDE,
            force_upcast=force_upcast,
        )
    vae.save_pretrained(folder)
    return folder


# ---- single-file checkpoints (the original Stable Diffusion layout) ------------------------------

_RESNET = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("time_emb_proj", "emb_layers.1"),
           ("norm2", "out_layers.0"), ("conv2", "out_layers.3"),
           ("conv_shortcut", "skip_connection"))
_UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
             "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2"}


def _rename(rest: str, pairs: tuple[tuple[str, str], ...]) -> str:
    for old, new in pairs:
        if rest.startswith(old + "."):
            return new + rest[len(old):]
    return rest


def _ldm_unet(state: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """A diffusers UNet state dict in the LDM layout diffusers' single-file loader reads back."""
    per_block = config["layers_per_block"] + 1
    attention_blocks = {int(k.split(".")[1]) for k in state if k.startswith("up_blocks.")
                        and ".attentions." in k}
    out: dict[str, Any] = {}
    for key, value in state.items():
        parts = key.split(".")
        top = next((t for t in _UNET_TOP if key.startswith(t + ".")), None)
        if top is not None:
            new = _UNET_TOP[top] + key[len(top):]
        elif parts[0] == "down_blocks":
            block, kind, index, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
            if kind == "resnets":
                new = f"input_blocks.{1 + block * per_block + index}.0.{_rename(rest, _RESNET)}"
            elif kind == "attentions":
                new = f"input_blocks.{1 + block * per_block + index}.1.{rest}"
            else:  # downsamplers.0.conv.*
                new = f"input_blocks.{(block + 1) * per_block}.0.op.{rest.removeprefix('conv.')}"
        elif parts[0] == "mid_block":
            kind, index, rest = parts[1], int(parts[2]), ".".join(parts[3:])
            if kind == "resnets":
                new = f"middle_block.{2 * index}.{_rename(rest, _RESNET)}"
            else:
                new = f"middle_block.1.{rest}"
        elif parts[0] == "up_blocks":
            block, kind, index, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
            if kind == "resnets":
                new = f"output_blocks.{block * per_block + index}.0.{_rename(rest, _RESNET)}"
            elif kind == "attentions":
                new = f"output_blocks.{block * per_block + index}.1.{rest}"
            else:  # upsamplers.0.conv.*: after the attention where the block has one
                slot = 2 if block in attention_blocks else 1
                new = f"output_blocks.{block * per_block + per_block - 1}.{slot}.{rest}"
        else:
            raise ValueError(f"unexpected UNet key {key}")
        out["model.diffusion_model." + new] = value
    return out


_VAE_ATTENTION = (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"),
                  ("to_out.0", "proj_out"))


def _ldm_vae(state: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    blocks = len(config["up_block_types"])
    out: dict[str, Any] = {}
    for key, value in state.items():
        coder, rest = key.split(".", 1)
        parts = rest.split(".")
        if coder in ("quant_conv", "post_quant_conv"):
            new = key
        elif parts[0] in ("conv_in", "conv_out"):
            new = key
        elif parts[0] == "conv_norm_out":
            new = f"{coder}.norm_out.{parts[1]}"
        elif parts[0] in ("down_blocks", "up_blocks"):
            block, kind = int(parts[1]), parts[2]
            level = block if parts[0] == "down_blocks" else blocks - 1 - block
            side = "down" if parts[0] == "down_blocks" else "up"
            tail = ".".join(parts[4:])
            if kind == "resnets":
                tail = tail.replace("conv_shortcut", "nin_shortcut")
                new = f"{coder}.{side}.{level}.block.{parts[3]}.{tail}"
            else:
                new = f"{coder}.{side}.{level}.{'downsample' if side == 'down' else 'upsample'}" \
                      f".{tail}"
        elif parts[0] == "mid_block" and parts[1] == "resnets":
            new = f"{coder}.mid.block_{int(parts[2]) + 1}.{'.'.join(parts[3:])}"
        elif parts[0] == "mid_block":
            new = f"{coder}.mid.attn_1.{_rename('.'.join(parts[3:]), _VAE_ATTENTION)}"
            if value.ndim == 2:  # linear in diffusers, 1×1 convolution in the original
                value = value[:, :, None, None]
        else:
            raise ValueError(f"unexpected VAE key {key}")
        out["first_stage_model." + new] = value
    return out


def _hf_clip(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    """A `CLIPTextModel` as the original checkpoints hold it (transformers' own key names)."""
    return {prefix + (key if key.startswith("text_model.") else "text_model." + key): value
            for key, value in state.items() if not key.endswith("position_ids")}


_OPEN_CLIP = (("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"), ("mlp.fc1", "mlp.c_fc"),
              ("mlp.fc2", "mlp.c_proj"), ("self_attn.out_proj", "attn.out_proj"))


def _open_clip(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    """A `CLIPTextModelWithProjection` in OpenCLIP's layout (SDXL's second text encoder)."""
    import torch

    out: dict[str, Any] = {}
    fused: dict[str, dict[str, Any]] = {}
    for key, value in state.items():
        rest = key.removeprefix("text_model.")
        if key == "text_projection.weight":
            out[prefix + "text_projection"] = value.T.contiguous()
        elif rest == "embeddings.token_embedding.weight":
            out[prefix + "token_embedding.weight"] = value
        elif rest == "embeddings.position_embedding.weight":
            out[prefix + "positional_embedding"] = value
        elif rest.startswith("final_layer_norm."):
            out[prefix + "ln_final." + rest.split(".")[-1]] = value
        elif rest.startswith("encoder.layers."):
            layer, inner = rest.removeprefix("encoder.layers.").split(".", 1)
            base = f"{prefix}transformer.resblocks.{layer}."
            if inner.startswith(("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")):
                projection, kind = inner.split(".")[1], inner.split(".")[2]
                fused.setdefault(f"{base}attn.in_proj_{kind}", {})[projection] = value
            else:
                out[base + _rename(inner, _OPEN_CLIP)] = value
    for key, parts in fused.items():
        out[key] = torch.cat([parts["q_proj"], parts["k_proj"], parts["v_proj"]])
    return out


def to_single_file(pipeline_dir: Path, target: Path) -> Path:
    """Write the diffusers pipeline in `pipeline_dir` as one original-layout checkpoint
    (`.safetensors` or `.ckpt`), as checkpoints are shared on Civitai."""
    import torch
    from safetensors.torch import load_file, save_file

    def component(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
        folder = pipeline_dir / name
        weights = next(folder.glob("*.safetensors"))
        return load_file(weights), json.loads((folder / "config.json").read_text())

    unet, unet_config = component("unet")
    vae, vae_config = component("vae")
    checkpoint = {**_ldm_unet(unet, unet_config), **_ldm_vae(vae, vae_config)}
    text_encoder, _ = component("text_encoder")
    if (pipeline_dir / "text_encoder_2").exists():
        text_encoder_2, _ = component("text_encoder_2")
        checkpoint.update(_hf_clip(text_encoder, "conditioner.embedders.0.transformer."))
        checkpoint.update(_open_clip(text_encoder_2, "conditioner.embedders.1.model."))
    else:
        checkpoint.update(_hf_clip(text_encoder, "cond_stage_model.transformer."))
    checkpoint = {key: value.contiguous() for key, value in checkpoint.items()}
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.suffix == ".ckpt":
        torch.save({"state_dict": checkpoint}, target)
    else:
        save_file(checkpoint, target)
    return target


def seed_hub_cache(cache: Path, repo_id: str, pipeline_dir: Path) -> Path:
    """Put the configuration files of `pipeline_dir` into a Hugging Face cache as `repo_id`, as a
    past download would have left them, so `from_single_file` finds them offline."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / _SNAPSHOT
    for path in pipeline_dir.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".txt"):
            destination = snapshot / path.relative_to(pipeline_dir)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, destination)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(_SNAPSHOT)
    return snapshot


# ---- LoRA ---------------------------------------------------------------------------------------

def build_lora(pipeline_dir: Path, target: Path, seed: int, rank: int = 4) -> Path:
    """A random LoRA for the UNet of `pipeline_dir`, saved as diffusers saves trained LoRAs."""
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = UNet2DConditionModel.from_pretrained(pipeline_dir / "unet")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        # Not the usual zero init: an untrained LoRA must still change the pictures.
        unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False,
                                    target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionPipeline.save_lora_weights(target.parent, unet_lora_layers=layers,
                                              weight_name=target.name, safe_serialization=True)
    return target


def build_transformer_lora(pipeline_dir: Path, target: Path, seed: int, rank: int = 4) -> Path:
    """A random LoRA for the transformer of the FLUX.1 or SD 3 pipeline in `pipeline_dir`, in
    diffusers' format (as diffusers' training scripts save them)."""
    import diffusers
    import torch
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    index = json.loads((pipeline_dir / "model_index.json").read_text())
    pipeline = getattr(diffusers, index["_class_name"])
    transformer = getattr(diffusers, index["transformer"][1]).from_pretrained(
        pipeline_dir / "transformer")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        transformer.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False,
                                           target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
        layers = get_peft_model_state_dict(transformer)
        # An untrained LoRA must still change the pictures of a tiny model clearly.
        layers = {key: value * 4 if "lora_B" in key else value for key, value in layers.items()}
    pipeline.save_lora_weights(target.parent, transformer_lora_layers=layers,
                               weight_name=target.name, safe_serialization=True)
    return target


def build_kohya_flux_lora(pipeline_dir: Path, target: Path, seed: int, rank: int = 4) -> Path:
    """A random LoRA for the tiny FLUX.1 in kohya's format (sd-scripts, as Civitai's FLUX LoRAs
    are): the original model's fused projections (`img_attn_qkv` is q, k and v at once) under
    `lora_unet_double_blocks_<i>_…`, with `lora_down`/`lora_up` and an alpha."""
    import torch
    from safetensors.torch import save_file

    config = json.loads((pipeline_dir / "transformer" / "config.json").read_text())
    inner = config["num_attention_heads"] * config["attention_head_dim"]
    generator = torch.Generator().manual_seed(seed)
    weights: dict[str, Any] = {}
    for block, outputs in (("img_attn_qkv", 3 * inner), ("txt_attn_qkv", 3 * inner),
                           ("img_attn_proj", inner), ("txt_attn_proj", inner)):
        name = f"lora_unet_double_blocks_0_{block}"
        weights[f"{name}.lora_down.weight"] = torch.randn(rank, inner, generator=generator)
        weights[f"{name}.lora_up.weight"] = torch.randn(outputs, rank, generator=generator)
        weights[f"{name}.alpha"] = torch.tensor(float(rank))
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file(weights, target)
    return target


# ---- fixtures -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelFiles:
    tiny: Path  # the `tiny` SD 1.x pipeline folder
    xl: Path  # a tiny SDXL pipeline folder
    sd1_file: Path  # `tiny` as one `.safetensors` checkpoint
    sd1_ckpt: Path  # `tiny` as a `.ckpt`
    xl_file: Path  # the tiny SDXL as one `.safetensors`
    loras: Path  # LORA_DIR: `detail` and `style` (for the tiny SD 1.x), `xl-detail` (SDXL)
    hub_cache: Path  # a Hugging Face cache holding the configurations of both base repositories


@pytest.fixture(scope="session")
def model_files(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> ModelFiles:
    """Every model file the model tests use, built once per session (a few seconds)."""
    root = tmp_path_factory.mktemp("model-files")
    xl = build_tiny_xl(root / "tiny-xl")
    loras = root / "loras"
    build_lora(tiny_model_dir, loras / "detail.safetensors", seed=1)
    build_lora(tiny_model_dir, loras / "style.safetensors", seed=2)
    build_lora(xl, loras / "xl-detail.safetensors", seed=3)
    hub_cache = root / "hub"
    seed_hub_cache(hub_cache, SD1_CONFIG_REPO, tiny_model_dir)
    seed_hub_cache(hub_cache, SDXL_CONFIG_REPO, xl)
    return ModelFiles(
        tiny=tiny_model_dir,
        xl=xl,
        sd1_file=to_single_file(tiny_model_dir, root / "files" / "tiny-sd1.safetensors"),
        sd1_ckpt=to_single_file(tiny_model_dir, root / "files" / "tiny-sd1.ckpt"),
        xl_file=to_single_file(xl, root / "files" / "tiny-xl.safetensors"),
        loras=loras,
        hub_cache=hub_cache,
    )


@pytest.fixture
def hub_cache(model_files: ModelFiles, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point the Hugging Face cache at the one holding the tiny base configurations, for this
    test: single-file checkpoints then load offline through the real `from_single_file`."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(model_files.hub_cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(model_files.hub_cache))
    yield model_files.hub_cache


@dataclass(frozen=True)
class FamilyFiles:
    cache: Path  # a model cache (DATA_DIR/models) holding tiny, tiny-flux and tiny-sd3
    # LORA_DIR: flux-detail (diffusers' format), flux-kohya, sd3-detail, detail (SD 1.x) and
    # xl-detail (SDXL)
    loras: Path
    lightning: Path  # the tiny SDXL, named as an SDXL-Lightning 4-step model


@pytest.fixture(scope="session")
def family_files(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path,
                 tiny_flux_dir: Path, tiny_sd3_dir: Path, model_files: ModelFiles) -> FamilyFiles:
    """The tiny FLUX.1, SD 3.5 and few-step SDXL models and their LoRAs, once per session."""
    root = tmp_path_factory.mktemp("family-files")
    cache = root / "models"
    cache.mkdir()
    for name, folder in (("tiny", tiny_model_dir), ("tiny-flux", tiny_flux_dir),
                         ("tiny-sd3", tiny_sd3_dir)):
        (cache / name).symlink_to(folder, target_is_directory=True)
    loras = root / "loras"
    build_transformer_lora(tiny_flux_dir, loras / "flux-detail.safetensors", seed=4)
    build_kohya_flux_lora(tiny_flux_dir, loras / "flux-kohya.safetensors", seed=5)
    build_transformer_lora(tiny_sd3_dir, loras / "sd3-detail.safetensors", seed=6)
    for sd in ("detail", "xl-detail"):
        shutil.copyfile(model_files.loras / f"{sd}.safetensors", loras / f"{sd}.safetensors")
    lightning = root / "sdxl_lightning_4step"
    lightning.symlink_to(model_files.xl, target_is_directory=True)
    return FamilyFiles(cache, loras, lightning)
