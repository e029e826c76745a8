"""Uploaded starting pictures: what is accepted, normalised, and refused."""

from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from bot import limits
from bot.uploads import UploadError, check_declared, normalise


def _encode(image: Image.Image, format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def _picture(size: tuple[int, int] = (48, 32)) -> Image.Image:
    """Left half red, right half blue: orientation and colour are both checkable."""
    image = Image.new("RGB", size, (255, 0, 0))
    image.paste((0, 0, 255), (size[0] // 2, 0, size[0], size[1]))
    return image


def _refused(data: bytes, filename: str = "upload.bin") -> str:
    with pytest.raises(UploadError) as caught:
        normalise(data, filename)
    message = str(caught.value)
    assert f"`{filename}`" in message
    return message


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return (struct.pack(">I", len(body)) + kind + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG file whose header claims `width`×`height` RGB pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _png_chunk(b"IEND", b""))


def _decoded(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    image.load()
    return image


@pytest.mark.parametrize(
    ("format", "mode", "options"),
    [
        ("PNG", "RGB", {}),
        ("PNG", "RGBA", {}),
        ("PNG", "P", {}),
        ("PNG", "L", {}),
        ("PNG", "I;16", {}),
        ("JPEG", "RGB", {"quality": 95}),
        ("JPEG", "CMYK", {"quality": 95}),
        ("WEBP", "RGB", {"lossless": True}),
        ("WEBP", "RGBA", {"quality": 90}),
    ],
)
def test_accepted_formats_become_rgb_png(format: str, mode: str,
                                         options: dict[str, object]) -> None:
    data = _encode(_picture().convert(mode), format, **options)
    png, width, height = normalise(data, "photo")
    assert (width, height) == (48, 32)
    image = _decoded(png)
    assert image.mode == "RGB" and image.size == (48, 32)
    if mode not in ("L", "I;16"):  # grey pictures stay grey; the others keep their colours
        pixels = np.asarray(image).astype(int)
        assert np.abs(pixels[16, 8] - (255, 0, 0)).max() < 40
        assert np.abs(pixels[16, 40] - (0, 0, 255)).max() < 40


def test_lossless_pixels_survive() -> None:
    picture = _picture()
    png, _, _ = normalise(_encode(picture, "PNG"))
    assert np.array_equal(np.asarray(_decoded(png)), np.asarray(picture))


def test_phone_jpeg_with_extra_pictures_is_a_jpeg() -> None:
    # Many cameras write MPO: a JPEG followed by more pictures. Pillow reports format MPO.
    data = _encode(_picture(), "MPO", save_all=True, append_images=[_picture().rotate(180)])
    assert Image.open(io.BytesIO(data)).format == "MPO"
    png, width, height = normalise(data, "IMG_0001.jpg")
    assert (width, height) == (48, 32)
    assert np.abs(np.asarray(_decoded(png)).astype(int)[16, 8] - (255, 0, 0)).max() < 40


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    data = _encode(_picture(), "JPEG", exif=exif, quality=95)
    png, width, height = normalise(data)
    assert (width, height) == (32, 48)
    pixels = np.asarray(_decoded(png)).astype(int)
    assert np.abs(pixels[8, 16] - (255, 0, 0)).max() < 40  # the left half is now on top
    assert np.abs(pixels[40, 16] - (0, 0, 255)).max() < 40


@pytest.mark.parametrize("format", ["GIF", "BMP", "TIFF", "ICO"])
def test_other_image_formats_are_refused(format: str) -> None:
    message = _refused(_encode(_picture(), format), f"picture.{format.lower()}")
    assert format in message and "PNG, JPEG or WebP" in message


@pytest.mark.parametrize("data", [b"", b"hello, this is text\n" * 50, b"%PDF-1.4\n" + b"0" * 99])
def test_non_images_are_refused(data: bytes) -> None:
    assert "PNG, JPEG or WebP" in _refused(data, "notes.txt")


def test_larger_than_10_mib_is_refused() -> None:
    data = _encode(_picture(), "PNG")
    padded = data + b"\0" * (limits.UPLOAD_MAX_BYTES - len(data) + 1)
    assert "10 MiB" in _refused(padded, "huge.png")
    exactly = data + b"\0" * (limits.UPLOAD_MAX_BYTES - len(data))
    assert normalise(exactly)[1:] == (48, 32)  # trailing bytes after IEND are ignored


@pytest.mark.parametrize("size", [(4097, 8), (8, 4097), (8000, 100)])
def test_sides_over_4096_are_refused(size: tuple[int, int]) -> None:
    message = _refused(_encode(Image.new("L", size), "PNG"), "wide.png")
    assert f"{size[0]}×{size[1]}" in message and "4096" in message


def test_side_of_4096_is_allowed() -> None:
    assert normalise(_encode(Image.new("RGB", (4096, 16)), "PNG"))[1:] == (4096, 16)


@pytest.mark.parametrize("size", [(50_000, 50_000), (5000, 5000), (4096, 4097)])
def test_decompression_bomb_refused_without_decoding(monkeypatch: pytest.MonkeyPatch,
                                                     size: tuple[int, int]) -> None:
    def never(self: ImageFile.ImageFile) -> None:
        raise AssertionError("the bomb was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", never)
    data = _png_claiming(*size)
    assert len(data) < 200
    started = time.perf_counter()
    message = _refused(data, "bomb.png")
    assert time.perf_counter() - started < 1.0
    assert "pixels" in message or "4096" in message


@pytest.mark.parametrize("format", ["PNG", "JPEG", "WEBP"])
def test_truncated_files_are_refused(format: str) -> None:
    rng = np.random.default_rng(0)  # noise, so the file is long and cutting it loses pixels
    noise = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    data = _encode(noise, format)
    assert "readable" in _refused(data[: len(data) // 2], f"cut.{format.lower()}")


def test_declared_size_and_type_are_checked_before_download() -> None:
    check_declared("a.png", limits.UPLOAD_MAX_BYTES, "image/png")
    check_declared("a.png", 1000, None)
    with pytest.raises(UploadError, match=r"`big\.png`.*10 MiB"):
        check_declared("big.png", limits.UPLOAD_MAX_BYTES + 1, "image/png")
    with pytest.raises(UploadError, match=r"`notes\.txt`.*not an image"):
        check_declared("notes.txt", 100, "text/plain")
