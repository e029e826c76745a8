"""Checking pictures users upload before any work is done with them."""

from __future__ import annotations

import asyncio
import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from PIL import Image, ImageOps

from bot import limits
from bot.prompt import PromptError

if TYPE_CHECKING:
    import discord

# Pillow refuses anything larger outright; our own side limit below is stricter still.
Image.MAX_IMAGE_PIXELS = limits.UPLOAD_MAX_SIDE * limits.UPLOAD_MAX_SIDE
DOWNLOAD_TIMEOUT = 10.0
# Pillow names a JPEG that carries extra pictures (as many phone cameras write) MPO; its first
# picture is a plain JPEG.
_FORMAT_ALIASES = {"MPO": "JPEG"}


class UploadError(PromptError):
    """An uploaded file cannot be used as a starting picture."""


def check_declared(filename: str, size: int, content_type: str | None) -> None:
    """What Discord tells us before download: the size and the declared type."""
    if size > limits.UPLOAD_MAX_BYTES:
        raise UploadError(
            f"`{filename}` is {size / 1024 / 1024:.1f} MiB; images may be at most "
            f"{limits.UPLOAD_MAX_BYTES // 1024 // 1024} MiB"
        )
    if content_type is not None and not content_type.startswith("image/"):
        raise UploadError(f"`{filename}` is not an image (PNG, JPEG or WebP)")


_SUFFIXES = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}
_SWAPS_SIDES = {5, 6, 7, 8}  # EXIF orientations that turn the picture a quarter


@contextmanager
def _opened(data: bytes, filename: str) -> Iterator[Image.Image]:
    """The upload opened lazily, its type and size checked; every failure an `UploadError`."""
    if len(data) > limits.UPLOAD_MAX_BYTES:
        raise UploadError(f"`{filename}` is larger than "
                          f"{limits.UPLOAD_MAX_BYTES // 1024 // 1024} MiB")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                kind = _FORMAT_ALIASES.get(image.format or "", image.format)
                if kind not in limits.UPLOAD_TYPES:
                    raise UploadError(f"`{filename}` is {image.format or 'not an image'}; "
                                      "use a PNG, JPEG or WebP image")
                width, height = image.size
                if max(width, height) > limits.UPLOAD_MAX_SIDE:
                    raise UploadError(
                        f"`{filename}` is {width}×{height}; images may be at most "
                        f"{limits.UPLOAD_MAX_SIDE} px a side"
                    )
                yield image
    except UploadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UploadError(f"`{filename}` decodes to too many pixels; images may be at most "
                          f"{limits.UPLOAD_MAX_SIDE} px a side") from None
    except (OSError, ValueError, SyntaxError, EOFError):
        raise UploadError(f"`{filename}` is not a readable PNG, JPEG or WebP image") from None


def inspect(data: bytes, filename: str = "image") -> tuple[int, int, str]:
    """Check an upload without decoding its pixels (fast enough before answering Discord):
    returns its upright (width, height) and a file suffix for its type."""
    with _opened(data, filename) as image:
        width, height = image.size
        if image.getexif().get(0x0112) in _SWAPS_SIDES:
            width, height = height, width
        kind = _FORMAT_ALIASES.get(image.format or "", image.format or "")
    if kind == "PNG":
        with _opened(data, filename) as image:
            image.verify()  # chunk structure and checksums: a cut-off file fails here
    return width, height, _SUFFIXES[kind]


def decode_upload(data: bytes, filename: str = "image") -> Image.Image:
    """The upload's pixels, upright, in RGB. Blocking: run in a thread (or the engine)."""
    with _opened(data, filename) as image:
        try:
            image.load()
        except (OSError, ValueError, SyntaxError, EOFError):
            raise UploadError(
                f"`{filename}` is not a readable PNG, JPEG or WebP image") from None
        return ImageOps.exif_transpose(image).convert("RGB")


def normalise(data: bytes, filename: str = "image") -> tuple[bytes, int, int]:
    """Decode an upload safely and re-encode it as a plain RGB PNG; returns (png, width, height).

    Blocking: run in a thread."""
    picture = decode_upload(data, filename)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue(), picture.width, picture.height


async def read_attachment(attachment: discord.Attachment) -> tuple[bytes, int, int, str]:
    """Download an uploaded picture and check it without decoding it: returns the bytes as
    uploaded, its upright width and height, and a file suffix for its type."""
    import discord  # here, not at the top: the engine uses this module's decoding, not Discord

    check_declared(attachment.filename, attachment.size, attachment.content_type)
    try:
        data = await asyncio.wait_for(attachment.read(), DOWNLOAD_TIMEOUT)
    except (TimeoutError, OSError, discord.HTTPException):
        raise UploadError(f"Could not download `{attachment.filename}`; try again") from None
    width, height, suffix = await asyncio.to_thread(inspect, data, attachment.filename)
    return data, width, height, suffix
