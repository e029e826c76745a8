"""Pictures as users get them: sizes from aspect ratios, grids, PNGs that carry their parameters."""

from __future__ import annotations

import io
from collections.abc import Sequence

from PIL import Image, ImageFilter

from bot import limits
from bot.engine import canvas
from bot.engine.pngmeta import a1111_parameters, encode_png  # noqa: F401  (pictures' PNGs)
from bot.prompt import Aspect


class ImageSizeError(ValueError):
    """The requested picture would be larger than the engine allows."""


def size_for(aspect: Aspect, native_side: int, multiple: int = 8) -> tuple[int, int]:
    """Map an aspect ratio onto the model's native area, both sides rounded to `multiple`."""
    return canvas.size_for(aspect.ratio, native_side, multiple)


def check_pixels(width: int, height: int) -> None:
    if width * height > limits.MAX_PIXELS:
        raise ImageSizeError(
            f"{width}×{height} is {width * height / 1e6:.1f} megapixels; "
            f"at most {limits.MAX_PIXELS / 1e6:.1f} are allowed"
        )


def compose_grid(images: Sequence[Image.Image]) -> Image.Image:
    """1 image: itself; 2: side by side; 3 or 4: 2×2 with touching cells (black where empty)."""
    if not 1 <= len(images) <= 4:
        raise ValueError(f"a grid holds 1 to 4 images, not {len(images)}")
    if len(images) == 1:
        return images[0]
    width, height = images[0].size
    columns, rows = (2, 1) if len(images) == 2 else (2, 2)
    grid = Image.new("RGB", (width * columns, height * rows), (0, 0, 0))
    for index, image in enumerate(images):
        grid.paste(image.convert("RGB"), ((index % columns) * width, (index // columns) * height))
    return grid


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def veil(image: Image.Image) -> Image.Image:
    """A picture made unrecognisable (for images flagged NSFW outside NSFW channels)."""
    small = image.convert("RGB").resize((max(1, image.width // 16), max(1, image.height // 16)),
                                        Image.Resampling.BILINEAR)
    return small.resize(image.size, Image.Resampling.NEAREST).filter(
        ImageFilter.GaussianBlur(radius=max(image.size) / 32))


def shrink_to(data: bytes, limit: int) -> tuple[bytes, str]:
    """Re-encode a picture to at most `limit` bytes: WebP at high quality first, then lower
    qualities, then smaller sizes. Returns (bytes, file suffix)."""
    image = decode(data).convert("RGB")
    while True:
        for quality in (92, 85, 75, 60):
            buffer = io.BytesIO()
            image.save(buffer, format="WEBP", quality=quality, method=4)
            if buffer.tell() <= limit:
                return buffer.getvalue(), "webp"
        if min(image.size) <= 64:
            return buffer.getvalue(), "webp"
        image = image.resize((image.width * 3 // 4, image.height * 3 // 4),
                             Image.Resampling.LANCZOS)


REGION_SHEET_SIDE = 512  # the longer side of the picture Vary (Region) shows to pick cells on
_CHOSEN = (255, 196, 0)  # the colour chosen cells are tinted with


def region_sheet(picture: Image.Image, chosen: frozenset[int] = frozenset()) -> Image.Image:
    """The picture under a numbered 3×3 grid (cells 1–9, row by row from the top left, edges at
    floor(k·W/3), floor(k·H/3)), the chosen cells tinted: what Vary (Region) shows."""
    from PIL import ImageDraw, ImageFont

    width, height = picture.size
    scale = REGION_SHEET_SIDE / max(width, height)
    shown = picture.convert("RGB").resize(
        (max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.LANCZOS)
    overlay = Image.new("RGBA", shown.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    font = ImageFont.load_default(size=max(14, shown.height // 9))
    for cell in range(1, 10):
        box = canvas.cell_box(cell, width, height)
        left, top = round(box.x * scale), round(box.y * scale)
        right, bottom = round(box.right * scale) - 1, round(box.bottom * scale) - 1
        if cell in chosen:
            draw.rectangle((left, top, right, bottom), fill=(*_CHOSEN, 70),
                           outline=(*_CHOSEN, 255), width=4)
        else:
            # With cells chosen, the others are dimmed: what will be kept stands back.
            draw.rectangle((left, top, right, bottom), fill=(0, 0, 0, 90 if chosen else 0),
                           outline=(255, 255, 255, 200), width=2)
        draw.text(((left + right) / 2, (top + bottom) / 2), str(cell), anchor="mm", font=font,
                  fill=(255, 255, 255, 235), stroke_width=3, stroke_fill=(0, 0, 0, 200))
    return Image.alpha_composite(shown.convert("RGBA"), overlay).convert("RGB")
