"""Zoom Out, Pan, Make Square and Vary (Region) geometry, and the keep rule (SPEC §3.1)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from bot.engine.canvas import (
    KEPT_BEYOND,
    Box,
    Canvas,
    cell_box,
    cells_mask,
    compose,
    fit_mask,
    keep,
    make_square,
    outside_mask,
    pan,
    round_to,
    zoom_out,
)


def test_zoom_out_keeps_the_size_and_centres_the_smaller_picture() -> None:
    assert zoom_out(128, 128, 2, 128) == Canvas(128, 128, Box(32, 32, 64, 64))
    assert zoom_out(168, 96, 1.5, 128) == Canvas(168, 96, Box(28, 16, 112, 64))
    # w×h = round(W/z)×round(H/z), placed at ((W−w)//2, (H−h)//2)
    assert zoom_out(512, 768, 1.3, 768) == Canvas(512, 768, Box(59, 88, 394, 591))


def test_zoom_out_of_a_picture_larger_than_the_native_area_gives_the_native_size() -> None:
    # an Upscale (2x) of a 168×96 tiny picture: 336×192 → back to /imagine's 16:9 size
    assert zoom_out(336, 192, 2, 128) == Canvas(168, 96, Box(42, 24, 84, 48))


def test_pan_grows_one_side_by_half_rounded_to_eight_halves_up() -> None:
    assert round_to(84, 8) == 88 and round_to(83.9, 8) == 80 and round_to(64, 8) == 64
    assert pan(168, 96, "right") == Canvas(256, 96, Box(0, 0, 168, 96))
    assert pan(168, 96, "left") == Canvas(256, 96, Box(88, 0, 168, 96))
    assert pan(168, 96, "down") == Canvas(168, 144, Box(0, 0, 168, 96))
    assert pan(168, 96, "up") == Canvas(168, 144, Box(0, 48, 168, 96))
    with pytest.raises(ValueError, match="unknown direction"):
        pan(168, 96, "sideways")


def test_make_square_centres_the_picture_on_its_longer_side() -> None:
    assert make_square(168, 96) == Canvas(168, 168, Box(0, 36, 168, 96))
    assert make_square(96, 168) == Canvas(168, 168, Box(36, 0, 96, 168))


def test_cells_are_numbered_row_by_row_with_floored_edges() -> None:
    assert cell_box(1, 128, 128) == Box(0, 0, 42, 42)
    assert cell_box(5, 128, 128) == Box(42, 42, 43, 43)
    assert cell_box(9, 128, 128) == Box(85, 85, 43, 43)
    assert cell_box(3, 168, 96) == Box(112, 0, 56, 32)
    with pytest.raises(ValueError):
        cell_box(10, 128, 128)


@given(st.integers(24, 400), st.integers(24, 400))
def test_the_nine_cells_tile_the_picture(width: int, height: int) -> None:
    covered = np.zeros((height, width), dtype=int)
    for cell in range(1, 10):
        box = cell_box(cell, width, height)
        covered[box.y:box.bottom, box.x:box.right] += 1
    assert (covered == 1).all()


def test_cells_mask_is_white_exactly_over_the_chosen_cells() -> None:
    mask = np.asarray(cells_mask({1, 9}, 128, 128))
    assert mask[:42, :42].min() == 255 and mask[85:, 85:].min() == 255
    assert mask.sum() == 255 * (42 * 42 + 43 * 43)


def test_a_users_mask_is_scaled_by_nearest_neighbour_to_pure_black_and_white() -> None:
    user = Image.new("L", (4, 2), 0)
    user.putpixel((3, 1), 200)
    user.putpixel((0, 0), 100)
    fitted = np.asarray(fit_mask(user, 8, 4))
    assert set(np.unique(fitted)) <= {0, 255}
    assert fitted[2:, 6:].min() == 255 and fitted[:2, :2].max() == 0
    assert fitted.sum() == 255 * 4


def test_compose_puts_the_picture_in_its_box_and_stretches_its_edges_outwards() -> None:
    picture = Image.new("RGB", (64, 64), (200, 30, 30))
    picture.paste((30, 30, 200), (0, 32, 64, 64))  # top red, bottom blue
    canvas = compose(picture, Canvas(128, 128, Box(32, 32, 64, 64)))
    pixels = np.asarray(canvas).astype(int)
    assert (pixels[32:96, 32:96] == np.asarray(picture)).all()
    top, bottom = pixels[2, 64], pixels[125, 64]
    assert top[0] > 150 and top[2] < 80  # red stretched upwards, not black
    assert bottom[2] > 150 and bottom[0] < 80  # blue downwards
    assert pixels[:32].min() > 0


def test_compose_scales_the_picture_to_its_box_with_lanczos() -> None:
    picture = Image.effect_noise((128, 128), 60).convert("RGB")
    canvas = compose(picture, Canvas(128, 128, Box(32, 32, 64, 64)))
    expected = picture.resize((64, 64), Image.Resampling.LANCZOS)
    assert (np.asarray(canvas)[32:96, 32:96] == np.asarray(expected)).all()


def test_keep_restores_the_original_beyond_the_blend_band() -> None:
    original = Image.effect_noise((128, 96), 80).convert("RGB")
    generated = Image.new("RGB", (128, 96), (0, 255, 0))
    mask = Image.new("L", (128, 96), 0)
    mask.paste(255, (40, 30, 80, 60))
    result = np.asarray(keep(generated, original, mask)).astype(int)
    old = np.asarray(original).astype(int)
    assert KEPT_BEYOND < 8
    far = np.ones((96, 128), dtype=bool)
    far[30 - 8:60 + 8, 40 - 8:80 + 8] = False
    assert (result[far] == old[far]).all()
    assert (result[31:59, 41:79] == (0, 255, 0)).all()  # inside: the generated picture
    band = result[30 - 4, 40:80]  # 4 px outside the edge: partly each
    assert 0 < band[:, 1].mean() < 255


def test_the_new_area_of_an_outpaint_is_everything_but_the_box() -> None:
    mask = np.asarray(outside_mask(Canvas(256, 96, Box(88, 0, 168, 96))))
    assert mask[:, :88].min() == 255 and mask[:, 88:].max() == 0
