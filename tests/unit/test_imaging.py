"""Grids on pixels, sizes from aspect ratios, and PNGs that carry their parameters."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bot import limits
from bot.imaging import (
    ImageSizeError,
    a1111_parameters,
    check_pixels,
    compose_grid,
    decode,
    encode_png,
    size_for,
)
from bot.prompt import Aspect

W, H = 40, 24  # cells are not square, so rows and columns cannot be mixed up
RED, GREEN, BLUE, YELLOW, BLACK = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 0, 0)


def _solid(colour: tuple[int, int, int], mode: str = "RGB") -> Image.Image:
    return Image.new("RGB", (W, H), colour).convert(mode)


def _expected(cells: list[list[tuple[int, int, int]]]) -> np.ndarray:
    """The pixels of a grid whose cells are filled with these colours, rows of columns."""
    rows = [np.concatenate([np.full((H, W, 3), colour, np.uint8) for colour in row], axis=1)
            for row in cells]
    return np.concatenate(rows, axis=0)


def test_one_image_is_itself() -> None:
    image = _solid(RED)
    grid = compose_grid([image])
    assert grid.size == (W, H)
    assert np.array_equal(np.asarray(grid), _expected([[RED]]))


def test_two_images_side_by_side() -> None:
    grid = compose_grid([_solid(RED), _solid(GREEN)])
    assert grid.size == (2 * W, H)
    assert np.array_equal(np.asarray(grid), _expected([[RED, GREEN]]))
    # the cells touch: the last column of the first and the first column of the second
    assert grid.getpixel((W - 1, H // 2)) == RED
    assert grid.getpixel((W, H // 2)) == GREEN


def test_three_images_in_two_by_two_with_black_fourth() -> None:
    grid = compose_grid([_solid(RED), _solid(GREEN), _solid(BLUE)])
    assert grid.size == (2 * W, 2 * H)
    assert grid.mode == "RGB"
    assert np.array_equal(np.asarray(grid), _expected([[RED, GREEN], [BLUE, BLACK]]))


def test_four_images_in_two_by_two() -> None:
    grid = compose_grid([_solid(RED), _solid(GREEN), _solid(BLUE), _solid(YELLOW)])
    assert grid.size == (2 * W, 2 * H)
    assert np.array_equal(np.asarray(grid), _expected([[RED, GREEN], [BLUE, YELLOW]]))
    centres = {(W // 2, H // 2): RED, (W + W // 2, H // 2): GREEN,
               (W // 2, H + H // 2): BLUE, (W + W // 2, H + H // 2): YELLOW}
    for point, colour in centres.items():
        assert grid.getpixel(point) == colour
    # no gutters: the borders between cells are the cells' own colours
    borders = {(W - 1, H - 1): RED, (W, H - 1): GREEN, (W - 1, H): BLUE, (W, H): YELLOW,
               (0, 0): RED, (2 * W - 1, 2 * H - 1): YELLOW}
    for point, colour in borders.items():
        assert grid.getpixel(point) == colour


def test_grid_converts_other_modes() -> None:
    grid = compose_grid([_solid(RED, "RGBA"), _solid(GREEN, "P"), _solid(BLUE, "RGB"),
                         _solid((128, 128, 128), "L")])
    assert grid.mode == "RGB"
    assert np.array_equal(np.asarray(grid),
                          _expected([[RED, GREEN], [BLUE, (128, 128, 128)]]))


@pytest.mark.parametrize("count", [0, 5])
def test_grid_refuses_what_it_cannot_lay_out(count: int) -> None:
    with pytest.raises(ValueError):
        compose_grid([_solid(RED)] * count)


def test_parameters_text_has_a1111_layout() -> None:
    text = a1111_parameters(prompt="a red fox", negative="blurry, dark", steps=30,
                            sampler="DPM++ 2M Karras", guidance=7.0, seed=42, width=512,
                            height=512, model="sd15")
    assert text == ("a red fox\nNegative prompt: blurry, dark\n"
                    "Steps: 30, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 42, "
                    "Size: 512x512, Model: sd15")
    no_negative = a1111_parameters(prompt="a red fox", negative="", steps=4, sampler="Euler",
                                   guidance=6.5, seed=4294967295, width=168, height=96,
                                   model="tiny", strength=0.35)
    assert no_negative == ("a red fox\nSteps: 4, Sampler: Euler, CFG scale: 6.5, "
                           "Seed: 4294967295, Size: 168x96, Model: tiny, Denoising strength: 0.35")


@pytest.mark.parametrize("prompt", ["a red fox", "ein Fuchs über Schnee", "狐 🦊 in snow"])
def test_parameters_chunk_round_trips(prompt: str) -> None:
    parameters = a1111_parameters(prompt=prompt, negative="no ☂", steps=30, sampler="Euler",
                                  guidance=7.0, seed=42, width=W, height=H, model="tiny")
    image = _solid(BLUE)
    data = encode_png(image, parameters)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    back = decode(data)
    assert back.format == "PNG" and back.size == (W, H)
    assert back.info["parameters"] == parameters
    assert np.array_equal(np.asarray(back.convert("RGB")), np.asarray(image))


def test_png_without_parameters_has_no_chunk() -> None:
    assert "parameters" not in decode(encode_png(_solid(RED))).info


@pytest.mark.parametrize(
    ("aspect", "native", "multiple", "size"),
    [
        (Aspect(1, 1), 128, 8, (128, 128)),
        (Aspect(16, 9), 128, 8, (168, 96)),
        (Aspect(3, 2), 128, 8, (160, 104)),
        (Aspect(1, 1), 512, 8, (512, 512)),
        (Aspect(1, 1), 1024, 8, (1024, 1024)),
        (Aspect(16, 9), 1024, 64, (1344, 768)),
        (Aspect(4, 1), 512, 8, (1024, 256)),
        (Aspect(1, 4), 8, 8, (8, 16)),  # never a side of 0
    ],
)
def test_size_for(aspect: Aspect, native: int, multiple: int, size: tuple[int, int]) -> None:
    assert size_for(aspect, native, multiple) == size
    assert all(side % multiple == 0 and side > 0 for side in size)


def test_pixel_limit_allows_upscaling_a_1024_square() -> None:
    check_pixels(2048, 2048)  # 4.19 megapixels
    assert 2048 * 2056 > limits.MAX_PIXELS
    with pytest.raises(ImageSizeError, match="4.2"):
        check_pixels(2048, 2056)
