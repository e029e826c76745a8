"""Tiny random adapters for the `tiny` model, built from configs with no download: a ControlNet, an
IP-Adapter (adapter file and image encoder, in h94/IP-Adapter's `models/` layout that
`SD_IP_ADAPTER` reads), a BLIP captioner, a DPT depth annotator and a VitPose pose annotator.
Their outputs are noise, so
tests assert the flow and what is provable (a condition changes the pixels, the same inputs give
the same pixels)."""

from __future__ import annotations

import string
from pathlib import Path

import pytest


def build_controlnet(tiny: Path, folder: Path) -> Path:
    """A ControlNet made from the tiny model's UNet. Its zero convolutions (the layers that start
    at zero in training, so an untrained ControlNet changes nothing) are given random weights,
    so that a control map does change the picture. The convolutions that read the map are
    given He's initialisation, a little stronger, with no biases: with PyTorch's default
    (smaller) weights, seven layers of them wash the map out, and two different maps would
    draw the same picture."""
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel

    with torch.random.fork_rng():
        torch.manual_seed(7)
        unet = UNet2DConditionModel.from_pretrained(tiny / "unet")
        controlnet = ControlNetModel.from_unet(
            unet, conditioning_embedding_out_channels=(8, 16, 16, 32))
        with torch.no_grad():
            for name, parameter in controlnet.named_parameters():
                if name.startswith(("controlnet_down_blocks", "controlnet_mid_block",
                                    "controlnet_cond_embedding.conv_out")):
                    parameter.normal_(0.0, 0.3)
                elif name.startswith(("controlnet_cond_embedding.conv_in",
                                      "controlnet_cond_embedding.blocks")):
                    if name.endswith(".weight"):
                        torch.nn.init.kaiming_normal_(parameter).mul_(1.5)
                    else:
                        parameter.zero_()
    controlnet.save_pretrained(folder)
    return folder


def build_ip_adapter(tiny: Path, folder: Path) -> Path:
    """An IP-Adapter for the tiny model: `folder/ip-adapter_tiny.safetensors` (a plain adapter:
    4 image tokens) and `folder/image_encoder/` (a tiny CLIP vision model)."""
    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    with torch.random.fork_rng():
        torch.manual_seed(11)
        encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
            hidden_size=32, intermediate_size=64, projection_dim=32, num_hidden_layers=2,
            num_attention_heads=4, image_size=32, patch_size=8))
        unet = UNet2DConditionModel.from_pretrained(tiny / "unet")
        width, dim = unet.config.cross_attention_dim, encoder.config.projection_dim
        weights = {"image_proj.proj.weight": torch.randn(4 * width, dim) * 0.1,
                   "image_proj.proj.bias": torch.zeros(4 * width),
                   "image_proj.norm.weight": torch.ones(width),
                   "image_proj.norm.bias": torch.zeros(width)}
        number = 1  # diffusers numbers the cross-attention layers 1, 3, 5… in processor order
        for name in unet.attn_processors:
            if name.endswith("attn2.processor"):
                channels = unet.get_submodule(name.removesuffix(".processor")).to_q.out_features
                weights[f"ip_adapter.{number}.to_k_ip.weight"] = torch.randn(channels, width) * 0.1
                weights[f"ip_adapter.{number}.to_v_ip.weight"] = torch.randn(channels, width) * 0.1
                number += 2
    encoder.save_pretrained(folder / "image_encoder")
    save_file(weights, folder / "ip-adapter_tiny.safetensors")
    return folder


def build_captioner(folder: Path) -> Path:
    """A tiny BLIP captioner with an offline word-piece tokenizer."""
    import torch
    from transformers import (
        BertTokenizerFast,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    vocab = {token: i for i, token in enumerate(
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "a", "photo", "of", "cat"])}
    for letter in string.ascii_lowercase:
        vocab.setdefault(letter, len(vocab))
        vocab["##" + letter] = len(vocab)
    processor = BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": 32, "width": 32}),
        tokenizer=BertTokenizerFast(vocab=vocab, bos_token="[DEC]", model_max_length=32))
    ids = dict(bos_token_id=vocab["[DEC]"], sep_token_id=vocab["[SEP]"],
               eos_token_id=vocab["[SEP]"], pad_token_id=vocab["[PAD]"])
    with torch.random.fork_rng():
        torch.manual_seed(13)
        model = BlipForConditionalGeneration(BlipConfig(
            projection_dim=32,
            text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64,
                             num_hidden_layers=2, num_attention_heads=4,
                             max_position_embeddings=64, **ids),
            vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                               num_attention_heads=4, image_size=32, patch_size=8)))
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def build_depth_annotator(folder: Path) -> Path:
    """A tiny DPT depth estimator, read by transformers' depth-estimation pipeline."""
    import torch
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    with torch.random.fork_rng():
        torch.manual_seed(17)
        model = DPTForDepthEstimation(DPTConfig(
            hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64,
            image_size=32, patch_size=8, backbone_out_indices=[0, 1, 2, 3],
            neck_hidden_sizes=[8, 16, 16, 32], fusion_hidden_size=16,
            reassemble_factors=[4, 2, 1, 0.5]))
    model.save_pretrained(folder)
    DPTImageProcessor(size={"height": 32, "width": 32},
                      keep_aspect_ratio=False).save_pretrained(folder)
    return folder


def build_pose_annotator(folder: Path) -> Path:
    """A tiny VitPose pose estimator (COCO's 17 keypoints) with its image processor. Its heatmaps
    are lifted by a bias, so every keypoint scores above the skeleton's threshold and is drawn."""
    import torch
    from transformers import VitPoseBackboneConfig, VitPoseConfig, VitPoseForPoseEstimation
    from transformers.models.vitpose.image_processing_pil_vitpose import VitPoseImageProcessorPil

    with torch.random.fork_rng():
        torch.manual_seed(17)
        model = VitPoseForPoseEstimation(VitPoseConfig(
            backbone_config=VitPoseBackboneConfig(
                image_size=[64, 48], patch_size=[16, 16], hidden_size=32, num_hidden_layers=2,
                num_attention_heads=4, out_indices=[2]),
            num_labels=17))
        with torch.no_grad():
            model.head.conv.bias.fill_(1.0)
    model.save_pretrained(folder)
    VitPoseImageProcessorPil(size={"height": 64, "width": 48}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_adapters(tiny_model_dir: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny model's ControlNet, IP-Adapter folder, captioner and annotators, built once per
    session."""
    root = tmp_path_factory.mktemp("adapters")
    return {
        "controlnet": build_controlnet(tiny_model_dir, root / "controlnet"),
        "ip_adapter": build_ip_adapter(tiny_model_dir, root / "ip-adapter"),
        "captioner": build_captioner(root / "blip"),
        "depth": build_depth_annotator(root / "dpt"),
        "pose": build_pose_annotator(root / "vitpose"),
    }
