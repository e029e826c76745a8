"""Checking pictures users upload before any work is done with them."""

from __future__ import annotations

import asyncio
import io
import warnings

import discord
from PIL import Image, ImageOps

from bot import limits
from bot.prompt import PromptError

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


def normalise(data: bytes, filename: str = "image") -> tuple[bytes, int, int]:
    """Decode an upload safely and re-encode it as a plain RGB PNG; returns (png, width, height).

    Blocking: run in a thread."""
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
                image.load()
                picture = ImageOps.exif_transpose(image).convert("RGB")
    except UploadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UploadError(f"`{filename}` decodes to too many pixels; images may be at most "
                          f"{limits.UPLOAD_MAX_SIDE} px a side") from None
    except (OSError, ValueError, SyntaxError):
        raise UploadError(f"`{filename}` is not a readable PNG, JPEG or WebP image") from None
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue(), picture.width, picture.height


async def read_attachment(attachment: discord.Attachment) -> tuple[bytes, int, int]:
    """Download and normalise an uploaded picture."""
    check_declared(attachment.filename, attachment.size, attachment.content_type)
    try:
        data = await asyncio.wait_for(attachment.read(), DOWNLOAD_TIMEOUT)
    except (TimeoutError, OSError, discord.HTTPException):
        raise UploadError(f"Could not download `{attachment.filename}`; try again") from None
    return await asyncio.to_thread(normalise, data, attachment.filename)
