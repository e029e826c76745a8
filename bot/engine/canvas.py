"""Canvases for editing a picture (SPEC §3.1): where the picture goes for Zoom Out, Pan and Make
Square, the masks of Vary (Region) cells, and putting the kept pixels back after inpainting.

Pure functions of sizes and PIL images. A mask is an `L` image, white (255) where the picture is
redrawn, black where it is kept; a `Box` is where the picture sits on a larger canvas."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

# The band over which the generated pixels fade into the kept ones, each side of a mask's edge: the
# mask grows by `GROW` px, then two box blurs of `BLUR` px soften it. The kept picture is exact
# from GROW + 2·BLUR = 7 px beyond the edge (SPEC §3.1 promises it from 8 px on).
GROW = 3
BLUR = 2
KEPT_BEYOND = GROW + 2 * BLUR
PREFILL_BLUR = 24  # px: how smooth the colours stretched into a new area are


@dataclass(frozen=True)
class Box:
    """A rectangle on a canvas: its top-left corner and its size."""

    x: int
    y: int
    width: int
    height: int

    @property
    def right(self) -> int:
        return self.x + self.width

    @property
    def bottom(self) -> int:
        return self.y + self.height

    def __str__(self) -> str:
        return f"{self.x},{self.y},{self.width},{self.height}"

    @classmethod
    def parse(cls, text: str) -> Box:
        x, y, width, height = (int(part) for part in text.split(","))
        return cls(x, y, width, height)


@dataclass(frozen=True)
class Canvas:
    """The size of an edit's result and where the picture sits on it."""

    width: int
    height: int
    box: Box


def round_half_up(value: float) -> int:
    return math.floor(value + 0.5)


def round_to(value: float, multiple: int) -> int:
    """The nearest multiple of `multiple` (halves up), at least `multiple`."""
    return max(multiple, round_half_up(value / multiple) * multiple)


def size_for(ratio: float, native_side: int, multiple: int = 8) -> tuple[int, int]:
    """An aspect ratio (width / height) mapped onto a model's native area, both sides rounded to
    `multiple`."""
    area = native_side * native_side
    width = math.sqrt(area * ratio)
    height = width / ratio
    return round_to(width, multiple), round_to(height, multiple)


def zoom_out(width: int, height: int, factor: float, native_side: int,
             multiple: int = 8) -> Canvas:
    """Zoom Out: the result is the picture's size (a picture larger than the model's native area
    gives the native-area size of its aspect); the picture, scaled by 1/`factor`, in its middle."""
    if width * height > native_side * native_side:
        width, height = size_for(width / height, native_side, multiple)
    small_w, small_h = round_half_up(width / factor), round_half_up(height / factor)
    return Canvas(width, height,
                  Box((width - small_w) // 2, (height - small_h) // 2, small_w, small_h))


PAN_DIRECTIONS = ("left", "right", "up", "down")


def pan(width: int, height: int, direction: str, multiple: int = 8) -> Canvas:
    """Pan: the canvas grows on one side by half the picture's side in that direction; the
    picture keeps its size, against the opposite edge."""
    if direction in ("left", "right"):
        grown = width + round_to(width / 2, multiple)
        x = grown - width if direction == "left" else 0
        return Canvas(grown, height, Box(x, 0, width, height))
    if direction in ("up", "down"):
        grown = height + round_to(height / 2, multiple)
        y = grown - height if direction == "up" else 0
        return Canvas(width, grown, Box(0, y, width, height))
    raise ValueError(f"unknown direction {direction!r}; one of {', '.join(PAN_DIRECTIONS)}")


def make_square(width: int, height: int) -> Canvas:
    """Make Square: S×S with S the longer side, the picture in the middle."""
    side = max(width, height)
    return Canvas(side, side, Box((side - width) // 2, (side - height) // 2, width, height))


def whole(width: int, height: int) -> Canvas:
    """The picture itself as the canvas (Vary (Region), a mask with `/imagine`)."""
    return Canvas(width, height, Box(0, 0, width, height))


def cell_box(cell: int, width: int, height: int) -> Box:
    """Cell 1–9 of a 3×3 grid over the picture, row by row from the top left; edges at
    floor(k·W/3) and floor(k·H/3)."""
    if not 1 <= cell <= 9:
        raise ValueError(f"cells are numbered 1 to 9, not {cell}")
    row, column = divmod(cell - 1, 3)
    left, right = column * width // 3, (column + 1) * width // 3
    top, bottom = row * height // 3, (row + 1) * height // 3
    return Box(left, top, right - left, bottom - top)


def cells_mask(cells: set[int] | frozenset[int], width: int, height: int) -> Image.Image:
    """White over the chosen cells, black elsewhere."""
    mask = Image.new("L", (width, height), 0)
    for cell in cells:
        box = cell_box(cell, width, height)
        mask.paste(255, (box.x, box.y, box.right, box.bottom))
    return mask


def outside_mask(canvas: Canvas) -> Image.Image:
    """White everywhere but where the picture sits: the new area of a Zoom Out, Pan or Square."""
    mask = Image.new("L", (canvas.width, canvas.height), 255)
    box = canvas.box
    mask.paste(0, (box.x, box.y, box.right, box.bottom))
    return mask


def fit_mask(mask: Image.Image, width: int, height: int) -> Image.Image:
    """A user's mask at the job's size (nearest neighbour), as pure black and white."""
    grey = mask.convert("L")
    if grey.size != (width, height):
        grey = grey.resize((width, height), Image.Resampling.NEAREST)
    return grey.point(lambda level: 255 if level >= 128 else 0)


def compose(picture: Image.Image, canvas: Canvas) -> Image.Image:
    """The picture on its canvas, the new area pre-filled with the picture's edge colours
    stretched outwards and smoothed (a sensible start for denoising; black would darken it)."""
    box = canvas.box
    picture = picture.convert("RGB")
    if picture.size != (box.width, box.height):
        picture = picture.resize((box.width, box.height), Image.Resampling.LANCZOS)
    if (box.x, box.y, box.width, box.height) == (0, 0, canvas.width, canvas.height):
        return picture
    pixels = np.asarray(picture)
    # Each pixel of the canvas takes the colour of the nearest pixel of the picture.
    rows = np.clip(np.arange(canvas.height) - box.y, 0, box.height - 1)
    columns = np.clip(np.arange(canvas.width) - box.x, 0, box.width - 1)
    stretched = Image.fromarray(pixels[rows[:, None], columns[None, :]], "RGB")
    result = stretched.filter(ImageFilter.GaussianBlur(PREFILL_BLUR))
    result.paste(picture, (box.x, box.y))
    return result


def blend_mask(mask: Image.Image) -> Image.Image:
    """How much of the generated picture shows at each pixel: all of it inside the mask, none
    from `KEPT_BEYOND` px outside it, a soft fade between."""
    grown = mask.filter(ImageFilter.MaxFilter(2 * GROW + 1))
    return grown.filter(ImageFilter.BoxBlur(BLUR)).filter(ImageFilter.BoxBlur(BLUR))


def keep(generated: Image.Image, original: Image.Image, mask: Image.Image) -> Image.Image:
    """The generated picture where the mask redraws, the original's own pixels where it keeps
    (inpainting passes the kept area through the VAE, which changes it slightly)."""
    alpha = np.asarray(blend_mask(mask), dtype=np.float32)[..., None] / 255.0
    new = np.asarray(generated.convert("RGB"), dtype=np.float32)
    old = np.asarray(original.convert("RGB"), dtype=np.float32)
    mixed = old + (new - old) * alpha
    return Image.fromarray(np.rint(mixed).astype(np.uint8), "RGB")
