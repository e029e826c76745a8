"""Turning prompts into text embeddings, with Midjourney `::` multi-prompt blending."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.prompt import parse_weighted_parts


@dataclass
class Conditioning:
    """Embeddings for one prompt (batch dimension 1); the pooled ones only for SDXL."""

    embeds: Any
    pooled: Any | None = None


def _encode_text(pipe: Any, text: str, device: Any) -> Conditioning:
    if hasattr(pipe, "text_encoder_2"):
        embeds, _, pooled, _ = pipe.encode_prompt(
            prompt=text, device=device, num_images_per_prompt=1, do_classifier_free_guidance=False
        )
        return Conditioning(embeds, pooled)
    embeds, _ = pipe.encode_prompt(text, device, 1, False)
    return Conditioning(embeds)


def encode_prompt(pipe: Any, prompt: str, device: Any) -> Conditioning:
    """Encode `prompt`; `a::2 b::1` blends each part's embeddings by its (normalised) weight."""
    parts = parse_weighted_parts(prompt) or ()
    if len(parts) <= 1:
        text = parts[0].text if parts else prompt
        return _encode_text(pipe, text, device)
    total = sum(part.weight for part in parts)
    encoded = [(_encode_text(pipe, part.text, device), part.weight / total) for part in parts]
    embeds = sum(cond.embeds * weight for cond, weight in encoded)
    pooled = None
    if encoded[0][0].pooled is not None:
        pooled = sum(cond.pooled * weight for cond, weight in encoded)
    return Conditioning(embeds, pooled)


def encode_negative(pipe: Any, negative: str, device: Any) -> Conditioning:
    return _encode_text(pipe, negative, device)
