"""Pictures as cameras and editors write them, built here: ICC colour profiles (Adobe RGB, and one
with red and green swapped), EXIF with GPS, 16-bit grey; and the expected colours, computed
without the colour library under test."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

D50 = (0.9642, 1.0, 0.8249)
# Primaries adapted to D50, as ICC profiles carry them (columns of the RGB → XYZ matrix).
SRGB_PRIMARIES = ((0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141))
ADOBE_RGB_PRIMARIES = ((0.6097, 0.3111, 0.0195), (0.2053, 0.6257, 0.0609),
                       (0.1492, 0.0632, 0.7446))
ADOBE_RGB_GAMMA = 563 / 256
# sRGB's primaries with red and green swapped: a red pixel means sRGB's green.
SWAPPED_PRIMARIES = (SRGB_PRIMARIES[1], SRGB_PRIMARIES[0], SRGB_PRIMARIES[2])
SWAPPED_GAMMA = 2.2

GPS_IFD = 0x8825
EXIF_IFD = 0x8769
ORIENTATION = 0x0112
MAKE = 0x010F


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz(xyz: tuple[float, float, float]) -> bytes:
    return b"XYZ " + b"\0" * 4 + b"".join(_s15(v) for v in xyz)


def _curve(gamma: float) -> bytes:
    return b"curv" + b"\0" * 4 + struct.pack(">IH", 1, round(gamma * 256)) + b"\0" * 2


def _description(text: str) -> bytes:
    ascii_text = text.encode("ascii") + b"\0"
    return (b"desc" + b"\0" * 4 + struct.pack(">I", len(ascii_text)) + ascii_text
            + b"\0" * 8 + b"\0" * 3 + b"\0" * 67)


def rgb_profile(name: str, primaries: tuple[tuple[float, float, float], ...],
                gamma: float) -> bytes:
    """A matrix/TRC RGB display profile (ICC v2) with these primaries and one gamma."""
    tags = [
        (b"desc", _description(name)),
        (b"cprt", b"text" + b"\0" * 4 + b"No copyright\0"),
        (b"wtpt", _xyz(D50)),
        (b"rXYZ", _xyz(primaries[0])),
        (b"gXYZ", _xyz(primaries[1])),
        (b"bXYZ", _xyz(primaries[2])),
        (b"rTRC", _curve(gamma)),
        (b"gTRC", _curve(gamma)),
        (b"bTRC", _curve(gamma)),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, body = [], b""
    for signature, data in tags:
        padded = data + b"\0" * (-len(data) % 4)
        table.append(struct.pack(">4sII", signature, offset + len(body), len(data)))
        body += padded
    size = offset + len(body)
    header = (struct.pack(">I", size) + b"\0" * 4 + struct.pack(">I", 0x02100000) + b"mntr"
              + b"RGB " + b"XYZ " + b"\0" * 12 + b"acsp" + b"\0" * 24
              + struct.pack(">I", 0) + b"".join(_s15(v) for v in D50) + b"\0" * 48)
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + b"".join(table) + body


def adobe_rgb_profile() -> bytes:
    return rgb_profile("Adobe RGB (1998)", ADOBE_RGB_PRIMARIES, ADOBE_RGB_GAMMA)


def swapped_profile() -> bytes:
    return rgb_profile("Red and green swapped", SWAPPED_PRIMARIES, SWAPPED_GAMMA)


def in_srgb(colour: tuple[int, int, int], primaries: tuple[tuple[float, float, float], ...],
            gamma: float) -> np.ndarray:
    """What `colour`, in a space of these primaries and gamma, is in sRGB (0–255, clipped)."""
    linear = (np.array(colour) / 255.0) ** gamma
    xyz = np.array(primaries).T @ linear
    srgb_linear = np.clip(np.linalg.solve(np.array(SRGB_PRIMARIES).T, xyz), 0, 1)
    encoded = np.where(srgb_linear <= 0.0031308, 12.92 * srgb_linear,
                       1.055 * srgb_linear ** (1 / 2.4) - 0.055)
    return np.asarray(encoded * 255)


def gps_exif(orientation: int | None = None) -> Image.Exif:
    """EXIF as a phone writes it: camera, place (GPS) and, if given, orientation."""
    exif = Image.Exif()
    exif[MAKE] = "Phone"
    if orientation is not None:
        exif[ORIENTATION] = orientation
    gps = exif.get_ifd(GPS_IFD)
    gps.update({1: "N", 2: (52.0, 22.0, 1.5), 3: "E", 4: (4.0, 53.0, 2.25)})
    return exif


def encode(image: Image.Image, format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def grey_16_bits(levels: list[int], height: int = 8) -> Image.Image:
    """A 16-bit grey picture ("I;16"): one column band per level, `height` rows."""
    row = np.repeat(np.array(levels, dtype=np.uint16), 8)
    return Image.fromarray(np.tile(row, (height, 1)))


def png_chunks(data: bytes) -> list[str]:
    """The chunk types of a PNG file, in order."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, kinds = 8, []
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        body = data[position + 8:position + 8 + length]
        crc = struct.unpack(">I", data[position + 8 + length:position + 12 + length])[0]
        assert zlib.crc32(kind + body) & 0xFFFFFFFF == crc
        kinds.append(kind.decode("ascii"))
        position += 12 + length
    return kinds
