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
from tests.pictures import (
    ADOBE_RGB_GAMMA,
    ADOBE_RGB_PRIMARIES,
    GPS_IFD,
    SWAPPED_GAMMA,
    SWAPPED_PRIMARIES,
    adobe_rgb_profile,
    gps_exif,
    grey_16_bits,
    in_srgb,
    png_chunks,
    swapped_profile,
)


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


@pytest.mark.parametrize("content_type", ["image/png", "image/jpeg", "image/webp",
                                          "image/jpeg; charset=binary", "IMAGE/PNG"])
def test_declared_picture_types_are_let_through(content_type: str) -> None:
    check_declared("a.png", 1000, content_type)


@pytest.mark.parametrize(("content_type", "name"), [("image/gif", "GIF"), ("image/bmp", "BMP"),
                                                    ("image/heic", "HEIC"),
                                                    ("image/svg+xml", "SVG"),
                                                    ("image/x-icon", "ICON")])
def test_other_declared_image_types_are_refused_before_download(content_type: str,
                                                                name: str) -> None:
    with pytest.raises(UploadError) as caught:
        check_declared("picture", 1000, content_type)
    assert str(caught.value) == f"`picture` is {name}; use a PNG, JPEG or WebP image"


# ---- what is stored of an upload: upright, 8-bit sRGB, no metadata

def test_16_bit_grey_keeps_its_grey_levels() -> None:
    levels = [0, 1000, 16384, 32768, 50000, 65535]
    picture = grey_16_bits(levels)
    data = _encode(picture, "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    png, width, height = normalise(data, "scan.png")
    stored = np.asarray(_decoded(png)).astype(int)
    assert (width, height) == picture.size
    expected = [round(level * 255 / 65535) for level in levels]
    assert [list(stored[0, 8 * i + 4]) for i in range(len(levels))] == [[v] * 3 for v in expected]


@pytest.mark.parametrize(
    ("profile", "primaries", "gamma"),
    [(adobe_rgb_profile(), ADOBE_RGB_PRIMARIES, ADOBE_RGB_GAMMA),
     (swapped_profile(), SWAPPED_PRIMARIES, SWAPPED_GAMMA)],
    ids=["adobe-rgb", "red-green-swapped"],
)
@pytest.mark.parametrize("format", ["PNG", "JPEG", "WEBP"])
def test_colours_are_converted_from_the_embedded_profile(profile: bytes,
                                                         primaries: tuple[tuple[float, ...], ...],
                                                         gamma: float, format: str) -> None:
    colours = [(180, 60, 60), (200, 30, 10), (120, 160, 90), (128, 128, 128)]
    picture = Image.new("RGB", (16 * len(colours), 16))
    for i, colour in enumerate(colours):
        picture.paste(colour, (16 * i, 0, 16 * (i + 1), 16))
    lossless = {"PNG": {}, "JPEG": {"quality": 100, "subsampling": 0},
                "WEBP": {"lossless": True}}[format]
    data = _encode(picture, format, icc_profile=profile, **lossless)
    stored = np.asarray(_decoded(normalise(data)[0])).astype(float)
    for i, colour in enumerate(colours):
        expected = in_srgb(colour, primaries, gamma)  # type: ignore[arg-type]
        assert np.abs(stored[8, 16 * i + 8] - expected).max() <= 3, (colour, expected)
    # the first colour is far from where it started: the profile was not ignored
    assert np.abs(stored[8, 8] - colours[0]).max() > 20


def test_a_palette_picture_with_a_profile_is_converted() -> None:
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([255, 0, 0])
    stored = np.asarray(_decoded(normalise(_encode(palette, "PNG",
                                                   icc_profile=swapped_profile()))[0]))
    assert list(stored[4, 4]) == [0, 255, 0]  # red in that space is sRGB's green


@pytest.mark.parametrize("profile", [b"not a profile", b"\0" * 200, adobe_rgb_profile()[:100]])
def test_an_unreadable_profile_is_taken_as_srgb(profile: bytes) -> None:
    picture = _picture()
    png, _, _ = normalise(_encode(picture, "PNG", icc_profile=profile))
    assert np.array_equal(np.asarray(_decoded(png)), np.asarray(picture))


def test_an_rgb_profile_on_a_grey_picture_is_ignored() -> None:
    grey = Image.new("L", (8, 8), 90)
    png, _, _ = normalise(_encode(grey, "PNG", icc_profile=adobe_rgb_profile()))
    assert (np.asarray(_decoded(png)) == 90).all()


def test_transparency_is_flattened_onto_white() -> None:
    rgba = Image.new("RGBA", (8, 4), (255, 0, 0, 255))
    rgba.paste((0, 0, 0, 0), (4, 0, 8, 4))  # invisible black: shows as white
    half = Image.new("LA", (8, 4), (0, 128))
    palette = Image.new("P", (8, 4), 1)
    palette.putpalette([0, 0, 255, 255, 0, 0])
    for picture, left, right in ((rgba, (255, 0, 0), (255, 255, 255)),
                                 (half, (127, 127, 127), (127, 127, 127))):
        stored = np.asarray(_decoded(normalise(_encode(picture, "PNG"))[0])).astype(int)
        assert np.abs(stored[2, 1] - left).max() <= 1 and np.abs(stored[2, 6] - right).max() <= 1
    stored = np.asarray(_decoded(normalise(_encode(palette, "PNG", transparency=1))[0]))
    assert (stored == 255).all()  # the only colour used is the transparent one


@pytest.mark.parametrize("format", ["JPEG", "PNG", "WEBP"])
def test_no_metadata_is_stored(format: str) -> None:
    """Where a phone photo was taken (GPS), the camera, the colour profile, text chunks
    (AUTOMATIC1111's parameters) are not kept: the stored PNG has pixels and nothing else."""
    exif = gps_exif(orientation=6)
    options: dict[str, object] = {"exif": exif, "icc_profile": adobe_rgb_profile()}
    if format == "PNG":
        from PIL import PngImagePlugin

        text = PngImagePlugin.PngInfo()
        text.add_text("parameters", "a secret prompt\nSteps: 30")
        options["pnginfo"] = text
    data = _encode(_picture(), format, **options)
    original = Image.open(io.BytesIO(data))
    assert original.getexif().get_ifd(GPS_IFD)  # it was there to begin with
    png, width, height = normalise(data, "IMG_0001")
    assert (width, height) == (32, 48)  # turned upright first
    assert png_chunks(png) == ["IHDR", "IDAT", "IEND"]
    stored = _decoded(png)
    assert stored.info == {} and not stored.getexif()
    assert b"secret" not in png and b"Phone" not in png
