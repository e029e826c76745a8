"""Checking pictures users upload before any work is done with them, and turning them into
the plain sRGB PNG that is stored: upright, 8 bits, no metadata."""

from __future__ import annotations

import asyncio
import io
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import discord
from PIL import Image, ImageOps

from bot import limits
from bot.engine.pictures import to_srgb
from bot.prompt import PromptError

log = logging.getLogger(__name__)

# Pillow refuses anything larger outright; our own side limit below is stricter still.
Image.MAX_IMAGE_PIXELS = limits.UPLOAD_MAX_SIDE * limits.UPLOAD_MAX_SIDE
# Pillow names a JPEG that carries extra pictures (as many phone cameras write) MPO; its first
# picture is a plain JPEG.
_FORMAT_ALIASES = {"MPO": "JPEG"}
# Image types Discord may declare for a file we can read; the file itself decides in the end.
_DECLARED_TYPES = {"png", "apng", "jpeg", "jpg", "pjpeg", "mpo", "webp"}


class UploadError(PromptError):
    """An uploaded file cannot be used as a starting picture."""


def check_declared(filename: str, size: int, content_type: str | None) -> None:
    """What Discord tells us before download: the size and the declared type."""
    if size > limits.UPLOAD_MAX_BYTES:
        raise UploadError(
            f"`{filename}` is {size / 1024 / 1024:.1f} MiB; images may be at most "
            f"{limits.UPLOAD_MAX_BYTES // 1024 // 1024} MiB"
        )
    if content_type is None:
        return
    kind, _, subtype = content_type.partition(";")[0].strip().lower().partition("/")
    if kind != "image":
        raise UploadError(f"`{filename}` is not an image (PNG, JPEG or WebP)")
    if subtype not in _DECLARED_TYPES:
        name = subtype.split("+")[0].removeprefix("x-").upper() or "not an image"
        raise UploadError(f"`{filename}` is {name}; use a PNG, JPEG or WebP image")


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


def decode_upload(data: bytes, filename: str = "image") -> Image.Image:
    """The upload's pixels, upright, in 8-bit sRGB (see `to_srgb`). Blocking: run in a thread
    (or the engine)."""
    with _opened(data, filename) as image:
        try:
            image.load()
        except (OSError, ValueError, SyntaxError, EOFError):
            raise UploadError(
                f"`{filename}` is not a readable PNG, JPEG or WebP image") from None
        return to_srgb(ImageOps.exif_transpose(image))


def normalise(data: bytes, filename: str = "image") -> tuple[bytes, int, int]:
    """Decode an upload safely and re-encode it as the plain RGB PNG that is stored: upright,
    in sRGB, without metadata. Returns (png, width, height). Blocking: run in a thread."""
    picture = decode_upload(data, filename)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue(), picture.width, picture.height


def normalise_mask(data: bytes, filename: str = "mask") -> bytes:
    """An uploaded mask as the black and white PNG that is stored: white where the picture is
    redrawn. A mask painted on a transparent layer keeps what is transparent. Refuses a mask
    with nothing to redraw. Blocking: run in a thread."""
    with _opened(data, filename) as image:
        try:
            image.load()
        except (OSError, ValueError, SyntaxError, EOFError):
            raise UploadError(
                f"`{filename}` is not a readable PNG, JPEG or WebP image") from None
        upright = ImageOps.exif_transpose(image)
        if upright.has_transparency_data:
            with_alpha = upright.convert("LA")
            grey = Image.new("L", upright.size, 0)
            grey.paste(with_alpha.getchannel("L"), mask=with_alpha.getchannel("A"))
        else:
            grey = upright.convert("L")
    mask = grey.point(lambda level: 255 if level >= 128 else 0)
    if mask.getextrema()[1] == 0:
        raise UploadError(f"`{filename}` is all black: paint the area to redraw in white")
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    return buffer.getvalue()


async def _download(attachment: discord.Attachment, timeout: float) -> bytes:
    try:
        data = await asyncio.wait_for(attachment.read(), timeout)
    except TimeoutError:
        raise UploadError(f"`{attachment.filename}` took longer than {timeout:g} s to "
                          "download; try again") from None
    except (OSError, discord.HTTPException):
        raise UploadError(f"Could not download `{attachment.filename}`; try again") from None
    return data


async def fetch(attachment: discord.Attachment, timeout: float) -> tuple[bytes, int, int]:
    """Download an uploaded picture within `timeout` seconds, then check and `normalise` it
    in a thread. Every problem is an `UploadError`; check the declared size and type with
    `check_declared` first, before answering Discord."""
    data = await _download(attachment, timeout)
    return await asyncio.to_thread(normalise, data, attachment.filename)


async def fetch_mask(attachment: discord.Attachment, timeout: float) -> bytes:
    """Download an uploaded mask like a picture (`fetch`), as `normalise_mask` stores it."""
    data = await _download(attachment, timeout)
    return await asyncio.to_thread(normalise_mask, data, attachment.filename)
