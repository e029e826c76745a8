"""PNGs that carry their parameters: the AUTOMATIC1111 `parameters` text chunk, which A1111's PNG
Info, ComfyUI and Civitai read back."""

from __future__ import annotations

import io
from collections.abc import Sequence

from PIL import Image, PngImagePlugin


def encode_png(image: Image.Image, parameters: str | None = None) -> bytes:
    """PNG bytes; `parameters` goes into the tEXt chunk AUTOMATIC1111, ComfyUI and Civitai read."""
    info = None
    if parameters is not None:
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", parameters)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info, compress_level=4)
    return buffer.getvalue()


def a1111_parameters(
    *,
    prompt: str,
    negative: str,
    steps: int,
    sampler: str,
    guidance: float,
    seed: int,
    width: int,
    height: int,
    model: str,
    strength: float | None = None,
    extra: Sequence[tuple[str, str]] = (),
) -> str:
    """The `parameters` text in AUTOMATIC1111's layout, so the PNG opens with its settings;
    `extra` fields (`Mask blur`, …) follow the usual ones."""
    lines = [prompt]
    if negative:
        lines.append(f"Negative prompt: {negative}")
    fields = [
        f"Steps: {steps}",
        f"Sampler: {sampler}",
        f"CFG scale: {guidance:g}",
        f"Seed: {seed}",
        f"Size: {width}x{height}",
        f"Model: {model}",
    ]
    if strength is not None:
        fields.append(f"Denoising strength: {strength:g}")
    fields.extend(f"{name}: {value}" for name, value in extra)
    lines.append(", ".join(fields))
    return "\n".join(lines)
