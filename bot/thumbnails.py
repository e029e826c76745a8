"""Thumbnails of stored pictures, made once and kept on disk, and `/history`'s contact sheet."""

from __future__ import annotations

import functools
import io
import logging
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

from bot.imaging import decode, veil
from storage import ImageRecord, ImageStore

log = logging.getLogger(__name__)

CELL = 256  # side of a contact-sheet cell; thumbnails fit inside it
COLUMNS = 3
JPEG_QUALITY = 85
BADGE = 30  # side of the number's square in a cell's top-left corner


class Thumbnails:
    """JPEG thumbnails under `root`, named by the SHA-256 of the picture they show, so each is
    decoded from the full PNG once. Blocking: call from a worker thread."""

    def __init__(self, store: ImageStore, root: Path) -> None:
        self.store = store
        self.root = root

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / f"{sha256}-{CELL}.jpg"

    def get(self, image: ImageRecord) -> Image.Image | None:
        """The thumbnail of `image`, made from the stored picture the first time; None when
        that picture cannot be read."""
        path = self.path(image.sha256)
        try:
            return _load(path)
        except FileNotFoundError:
            pass
        except OSError as error:  # a damaged thumbnail is made again
            log.warning("thumbnail %s unreadable: %s", path, error)
        try:
            picture = decode(self.store.read(image.path))
        except (OSError, ValueError) as error:
            log.warning("no thumbnail for image %s of job %s: %s", image.index + 1, image.job_id,
                        error)
            return None
        thumbnail = ImageOps.contain(picture.convert("RGB"), (CELL, CELL),
                                     Image.Resampling.LANCZOS)
        _write(path, _jpeg(thumbnail))
        return thumbnail

    def contact_sheet(self, images: Sequence[ImageRecord | None],
                      veiled: Sequence[bool]) -> bytes:
        """The numbered sheet of these pictures (None leaves a cell empty), as JPEG bytes;
        the pictures whose `veiled` is true are made unrecognisable."""
        cells = []
        for image, hidden in zip(images, veiled, strict=True):
            thumbnail = self.get(image) if image is not None else None
            if thumbnail is not None and hidden:
                thumbnail = veil(thumbnail)
            cells.append(thumbnail)
        return _jpeg(compose_sheet(cells))


def compose_sheet(cells: Sequence[Image.Image | None]) -> Image.Image:
    """Cells of `CELL`² in rows of three, each picture centred on black and numbered from 1."""
    if not 1 <= len(cells) <= COLUMNS * COLUMNS:
        raise ValueError(f"a contact sheet holds 1 to {COLUMNS * COLUMNS} cells, not {len(cells)}")
    columns = min(len(cells), COLUMNS)
    rows = math.ceil(len(cells) / COLUMNS)
    sheet = Image.new("RGB", (columns * CELL, rows * CELL), (0, 0, 0))
    draw = ImageDraw.Draw(sheet)
    font = _font()
    for number, cell in enumerate(cells, start=1):
        left, top = ((number - 1) % COLUMNS) * CELL, ((number - 1) // COLUMNS) * CELL
        if cell is not None:
            sheet.paste(cell, (left + (CELL - cell.width) // 2, top + (CELL - cell.height) // 2))
        draw.rectangle((left, top, left + BADGE - 1, top + BADGE - 1), fill=(0, 0, 0))
        draw.text((left + BADGE / 2, top + BADGE / 2), str(number), fill=(255, 255, 255),
                  font=font, anchor="mm")
    return sheet


@functools.cache
def _font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=20)


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def _load(path: Path) -> Image.Image:
    with Image.open(path) as image:
        image.load()
        return image.convert("RGB")


def _write(path: Path, data: bytes) -> None:
    """Write through a temporary file, so a reader never sees half a thumbnail."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp:
        tmp.write(data)
    os.replace(tmp.name, path)
