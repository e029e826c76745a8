"""Thumbnails of stored pictures, made once and kept on disk: JPEG for `/history`'s contact
sheet, WebP for the team gallery."""

from __future__ import annotations

import functools
import io
import logging
import math
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

from bot.imaging import decode, veil
from storage import ImageRecord, ImageStore
from storage.files import write_file

log = logging.getLogger(__name__)

CELL = 256  # side of a contact-sheet cell; thumbnails fit inside it
COLUMNS = 3
JPEG_QUALITY = 85
WEBP_QUALITY = 80
BADGE = 30  # side of the number's square in a cell's top-left corner


class Thumbnails:
    """JPEG thumbnails under `root`, named by the SHA-256 of the picture they show, so each is
    decoded from the full PNG once. Blocking: call from a worker thread."""

    def __init__(self, store: ImageStore, root: Path) -> None:
        self.store = store
        self.root = root

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / f"{sha256}-{CELL}.jpg"

    def webp_path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / f"{sha256}-{CELL}.webp"

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
        thumbnail = self._shrink(image)
        if thumbnail is not None:
            _keep(path, _jpeg(thumbnail))
        return thumbnail

    def webp(self, image: ImageRecord) -> Path | None:
        """The file of `image`'s WebP thumbnail (the gallery's), made the first time it is
        asked for; None when the stored picture cannot be read."""
        path = self.webp_path(image.sha256)
        if path.exists():
            return path
        thumbnail = self._shrink(image)
        if thumbnail is None:
            return None
        buffer = io.BytesIO()
        thumbnail.save(buffer, format="WEBP", quality=WEBP_QUALITY, method=4)
        return path if _keep(path, buffer.getvalue()) else None

    def _shrink(self, image: ImageRecord) -> Image.Image | None:
        """The stored picture scaled to fit a `CELL`² square; None when it cannot be read."""
        try:
            picture = decode(self.store.read(image.path))
        except (OSError, ValueError) as error:
            log.warning("no thumbnail for image %s of job %s: %s", image.index + 1, image.job_id,
                        error)
            return None
        return ImageOps.contain(picture.convert("RGB"), (CELL, CELL), Image.Resampling.LANCZOS)

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


def _keep(path: Path, data: bytes) -> bool:
    """Write a thumbnail atomically; a full disk costs the cache, not the page (False)."""
    try:
        write_file(path, data, replace=True)
    except OSError as error:
        log.warning("could not keep thumbnail %s: %s", path, error)
        return False
    return True
