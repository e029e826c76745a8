"""Cheap live previews: latents projected linearly to RGB, no VAE call.

The projection runs where the latents are (`latents_to_rgb`, on the engine's thread, a few
microseconds of GPU work); copying the small result to the CPU and encoding it (`rgb_to_png`)
can then happen on another thread, so the engine never waits for the GPU to catch up.

SD and SDXL latents (4 channels) use AUTOMATIC1111's fitted factors. For the 16-channel latents of
FLUX.1 and SD 3.5, the projection is fitted to the model's own VAE when it loads
(`fit_projection`): a chart of colours is encoded once, and the least-squares map from its latents
back to its colours is the preview's."""

from __future__ import annotations

import io
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Projection:
    """A linear map from a latent's channels to RGB in [-1, 1]: one row of `factors` per
    channel, then `bias`."""

    factors: tuple[tuple[float, ...], ...]
    bias: tuple[float, float, float] = (0.0, 0.0, 0.0)


SD_PROJECTION = Projection(_SD_FACTORS)
SDXL_PROJECTION = Projection(_SDXL_FACTORS)
CHART_CELL = 32  # pixels of one colour on the chart (4×4 latents)
CHART_LEVELS = (0, 85, 170, 255)  # of each channel: 64 colours, an 8×8 chart


def latents_to_rgb(latents: Any, projection: Projection = SD_PROJECTION) -> Any:
    """One latent (C×H×W tensor) as an H×W×3 tensor of bytes, on the latent's device."""
    import torch

    factors = torch.tensor(projection.factors, dtype=torch.float32, device=latents.device)
    bias = torch.tensor(projection.bias, dtype=torch.float32, device=latents.device)
    latent = latents.detach().to(torch.float32)[: factors.shape[0]]
    rgb = torch.einsum("chw,cr->hwr", latent, factors[: latent.shape[0]]) + bias
    return ((rgb + 1.0) * 127.5).clamp(0, 255).to(torch.uint8)


def colour_chart() -> Any:
    """A picture of 64 colours in cells of `CHART_CELL` pixels."""
    from PIL import Image

    colours = [(r, g, b) for r in CHART_LEVELS for g in CHART_LEVELS for b in CHART_LEVELS]
    side = 8
    chart = Image.new("RGB", (side * CHART_CELL, side * CHART_CELL))
    for index, colour in enumerate(colours):
        x, y = index % side * CHART_CELL, index // side * CHART_CELL
        chart.paste(colour, (x, y, x + CHART_CELL, y + CHART_CELL))
    return chart


def fit_projection(vae: Any, device: Any) -> Projection:
    """The projection of `vae`'s latents (as its pipeline holds them: shifted and scaled) to
    RGB, fitted by least squares on the latents of `colour_chart` (encoded on `device`, where
    the pipeline runs its VAE)."""
    import numpy as np
    import torch

    chart = np.asarray(colour_chart(), dtype=np.float32) / 127.5 - 1.0  # H×W×3 in [-1, 1]
    pixels = torch.from_numpy(chart).permute(2, 0, 1)[None]
    with torch.inference_mode():
        latent = vae.encode(pixels.to(device, vae.dtype)).latent_dist.mean.float().cpu()
    config = vae.config
    latent = (latent - (getattr(config, "shift_factor", None) or 0.0)) * config.scaling_factor
    scale = pixels.shape[-1] // latent.shape[-1]
    # Each latent stands for the mean colour of the pixels it covers.
    target = torch.nn.functional.avg_pool2d(pixels, scale)[0].permute(1, 2, 0).reshape(-1, 3)
    inputs = latent[0].permute(1, 2, 0).reshape(-1, latent.shape[1])
    inputs = torch.cat([inputs, torch.ones(inputs.shape[0], 1)], dim=1)
    solution = torch.linalg.lstsq(inputs, target).solution  # (channels + 1) × 3
    rows = solution.tolist()
    return Projection(tuple(tuple(row) for row in rows[:-1]),
                      (rows[-1][0], rows[-1][1], rows[-1][2]))


def rgb_to_png(pixels: Any, scale: int = 2) -> bytes:
    """A small PNG of `latents_to_rgb`'s pixels, `scale` times their size."""
    from PIL import Image

    image = Image.fromarray(pixels.cpu().numpy(), "RGB")
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def latents_to_png(latents: Any, projection: Projection = SD_PROJECTION, scale: int = 2) -> bytes:
    """A small PNG of one latent (C×H×W tensor), `scale` times the latent size."""
    return rgb_to_png(latents_to_rgb(latents, projection), scale)
