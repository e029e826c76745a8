"""Pictures as the engine takes them: decoded, upright, 8-bit sRGB, whatever file they came in.

Uploads are normalised with the same conversion before they are stored (`bot.uploads`), so a
picture looks the same whether it is shown, stored or used to start a job."""

from __future__ import annotations

import functools
import io
import logging
import warnings

import numpy as np
from PIL import Image, ImageCms, ImageOps

from bot.engine.types import EngineError

log = logging.getLogger(__name__)

# Pictures the engine is given come from the image store: uploads were checked and normalised, the
# rest it made itself. This bound only keeps a damaged or foreign file from decoding to gigabytes.
PICTURE_MAX_SIDE = 8192
_GREY_16_BITS = {"I", "I;16", "I;16L", "I;16B", "I;16N"}


def decode_picture(data: bytes | None, what: str) -> Image.Image:
    """An encoded picture, upright, in 8-bit sRGB; `EngineError` naming `what` when it cannot be
    read."""
    if data is None:
        raise EngineError(f"This job has no {what}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                if max(image.size) > PICTURE_MAX_SIDE:
                    raise EngineError(f"The {what} is too large ({image.width}×{image.height})")
                image.load()
                return to_srgb(ImageOps.exif_transpose(image))
    except EngineError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError,
            Image.DecompressionBombWarning):
        raise EngineError(f"The {what} of this job cannot be read") from None


def to_srgb(image: Image.Image) -> Image.Image:
    """`image` as 8-bit RGB in sRGB: 16-bit grey scaled down to 8 bits (not clipped to white),
    transparency flattened onto white (AUTOMATIC1111's img2img background), and colours
    converted from an embedded ICC profile (Adobe RGB, Display P3, CMYK…). The result carries
    no metadata at all."""
    profile = image.info.get("icc_profile")
    # 1. Samples to 8 bits
    if image.mode in _GREY_16_BITS:
        image = _grey_to_8_bits(image)
    # 2. Transparency onto white, in the picture's own colour space
    if image.has_transparency_data:
        grey = image.mode in ("L", "LA", "La")
        with_alpha = image.convert("LA" if grey else "RGBA")
        flat = Image.new(with_alpha.mode[:-1], image.size, "white")
        flat.paste(with_alpha, mask=with_alpha.getchannel("A"))
        image = flat
    # 3. Colours to sRGB (a palette is expanded first: colour transforms work on pixels)
    if image.mode not in ("L", "RGB", "CMYK"):
        image = image.convert("RGB")
    if profile:
        image = _from_profile(image, profile)
    rgb = image.convert("RGB")
    # A new image, so that no EXIF (GPS, camera), ICC or text chunk of the upload goes along.
    return Image.frombytes("RGB", rgb.size, rgb.tobytes())


def _grey_to_8_bits(image: Image.Image) -> Image.Image:
    samples = np.clip(np.asarray(image).astype(np.int64), 0, 65535)
    return Image.fromarray(((samples * 255 + 32767) // 65535).astype(np.uint8), "L")


def _from_profile(image: Image.Image, profile: bytes) -> Image.Image:
    """`image` converted from `profile` to sRGB; unchanged where the profile is unreadable or
    does not fit the picture (an RGB profile on a grey picture): then it is taken as sRGB."""
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
        converted = ImageCms.profileToProfile(
            image, source, _srgb(), renderingIntent=ImageCms.Intent.PERCEPTUAL,
            outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as error:
        log.info("ignoring an unusable ICC profile of an upload: %s", error)
        return image
    assert converted is not None  # not converted in place
    return converted


@functools.cache
def _srgb() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
