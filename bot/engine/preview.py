"""Cheap live previews: latents projected linearly to RGB, no VAE call.

The projection runs where the latents are (`latents_to_rgb`, on the engine's thread, a few
microseconds of GPU work); copying the small result to the CPU and encoding it (`rgb_to_png`)
can then happen on another thread, so the engine never waits for the GPU to catch up."""

from __future__ import annotations

import io
from typing import Any

# Least-squares fits of latent channels to RGB, as used by AUTOMATIC1111's "Approx cheap" preview.
_SD_FACTORS = (
    (0.3512, 0.2297, 0.3227),
    (0.3250, 0.4974, 0.2350),
    (-0.2829, 0.1762, 0.2721),
    (-0.2120, -0.2616, -0.7177),
)
_SDXL_FACTORS = (
    (0.3920, 0.4054, 0.4549),
    (-0.2634, -0.0196, 0.0653),
    (0.0568, 0.1687, -0.0755),
    (-0.3112, -0.2359, -0.2076),
)


def latents_to_rgb(latents: Any, sdxl: bool = False) -> Any:
    """One latent (C×H×W tensor) as an H×W×3 tensor of bytes, on the latent's device."""
    import torch

    factors = torch.tensor(_SDXL_FACTORS if sdxl else _SD_FACTORS, dtype=torch.float32,
                           device=latents.device)
    latent = latents.detach().to(torch.float32)[: factors.shape[0]]
    rgb = torch.einsum("chw,cr->hwr", latent, factors[: latent.shape[0]])
    return ((rgb + 1.0) * 127.5).clamp(0, 255).to(torch.uint8)


def rgb_to_png(pixels: Any, scale: int = 2) -> bytes:
    """A small PNG of `latents_to_rgb`'s pixels, `scale` times their size."""
    from PIL import Image

    image = Image.fromarray(pixels.cpu().numpy(), "RGB")
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def latents_to_png(latents: Any, sdxl: bool = False, scale: int = 2) -> bytes:
    """A small PNG of one latent (C×H×W tensor), `scale` times the latent size."""
    return rgb_to_png(latents_to_rgb(latents, sdxl), scale)
