"""`resolve`: which value wins, sizes per aspect, and the errors users get."""

from __future__ import annotations

import random

import pytest

from bot import limits
from bot.catalogue import Catalogue
from bot.engine.models import FAMILIES, ModelSpec, describe
from bot.engine.samplers import SAMPLERS
from bot.options import DEFAULT_COUNT, DEFAULT_STRENGTH, ImagineOptions, random_seed, resolve
from bot.prompt import Aspect, PromptError
from storage import UserSettings

TINY = describe("tiny", "tiny")
SD1 = ModelSpec("sd15", "stable-diffusion-v1-5/stable-diffusion-v1-5", FAMILIES["sd1"])
SDXL = ModelSpec("xl", "stabilityai/stable-diffusion-xl-base-1.0", FAMILIES["sdxl"], sdxl=True)
NO_DEFAULTS = UserSettings(user_id=1)


@pytest.fixture
def catalogue() -> Catalogue:
    return Catalogue([TINY, SD1, SDXL])


def _resolve(catalogue: Catalogue, prompt: str = "a cat", defaults: UserSettings = NO_DEFAULTS,
             **options: object):
    return resolve(ImagineOptions(prompt=prompt, **options), defaults, catalogue)  # type: ignore[arg-type]


def _error(catalogue: Catalogue, prompt: str = "a cat", defaults: UserSettings = NO_DEFAULTS,
           **options: object) -> str:
    with pytest.raises(PromptError) as caught:
        _resolve(catalogue, prompt, defaults, **options)
    return str(caught.value)


TINY_SIZES = {
    "1:1": (128, 128), "4:3": (144, 112), "3:4": (112, 144), "3:2": (160, 104),
    "2:3": (104, 160), "16:9": (168, 96), "9:16": (96, 168), "21:9": (192, 80),
}
SD1_SIZES = {
    "1:1": (512, 512), "4:3": (592, 440), "3:4": (440, 592), "3:2": (624, 416),
    "2:3": (416, 624), "16:9": (680, 384), "9:16": (384, 680), "21:9": (784, 336),
}


def test_table_covers_every_aspect_choice() -> None:
    assert set(TINY_SIZES) == set(SD1_SIZES) == set(limits.ASPECT_CHOICES)


@pytest.mark.parametrize(("model", "sizes", "native"),
                         [("tiny", TINY_SIZES, 128), ("sd15", SD1_SIZES, 512)])
@pytest.mark.parametrize("aspect", limits.ASPECT_CHOICES)
def test_size_for_every_aspect_choice(catalogue: Catalogue, model: str,
                                      sizes: dict[str, tuple[int, int]], native: int,
                                      aspect: str) -> None:
    by_option = _resolve(catalogue, model=model, aspect=aspect)
    by_text = _resolve(catalogue, prompt=f"a cat --ar {aspect} --model {model}")
    width, height = sizes[aspect]
    assert (by_option.width, by_option.height) == (by_text.width, by_text.height) == sizes[aspect]
    assert width % 8 == 0 and height % 8 == 0
    # the picture keeps the model's native area and the asked-for shape (up to rounding to 8,
    # which on the tiny model's 80 px side of 21:9 is 5%)
    assert abs(width * height / native**2 - 1) < 0.07
    w, h = map(int, aspect.split(":"))
    assert abs((width / height) / (w / h) - 1) < 0.06


def test_defaults_come_from_the_model_family(catalogue: Catalogue) -> None:
    params = _resolve(catalogue)
    assert params.model == TINY  # the first model is the default
    assert (params.width, params.height) == (128, 128)
    assert params.aspect == Aspect(1, 1)
    assert (params.steps, params.guidance, params.sampler) == (30, 7.0, "euler")
    assert params.count == DEFAULT_COUNT == 4
    assert params.negative == ""
    assert params.strength is None
    sd1 = _resolve(catalogue, model="sd15")
    assert (sd1.width, sd1.height, sd1.sampler) == (512, 512, "dpm++_2m_karras")
    xl = _resolve(catalogue, model="XL")
    assert (xl.width, xl.height, xl.guidance) == (1024, 1024, 6.0)


SAVED = UserSettings(user_id=1, aspect="2:3", steps=12, guidance=3.0, negative="saved neg",
                     model="sd15", count=2, sampler="ddim")


def test_saved_settings_win_over_family_defaults(catalogue: Catalogue) -> None:
    params = _resolve(catalogue, defaults=SAVED)
    assert params.model == SD1
    assert (params.width, params.height) == SD1_SIZES["2:3"]
    assert (params.steps, params.guidance, params.count, params.sampler) == (12, 3.0, 2, "ddim")
    assert params.negative == "saved neg"


def test_inline_parameters_win_over_saved_settings(catalogue: Catalogue) -> None:
    params = _resolve(
        catalogue, defaults=SAVED,
        prompt="a cat --ar 16:9 --steps 7 --cfg 9 --n 3 --model tiny --sampler unipc --seed 5",
    )
    assert params.prompt == "a cat"
    assert params.model == TINY
    assert (params.width, params.height) == (168, 96)
    assert (params.steps, params.guidance, params.count, params.sampler, params.seed) == (
        7, 9.0, 3, "unipc", 5)


def test_slash_options_win_over_inline_parameters(catalogue: Catalogue) -> None:
    params = _resolve(
        catalogue, defaults=SAVED,
        prompt="a cat --ar 16:9 --steps 7 --cfg 9 --n 3 --model tiny --seed 5",
        aspect="3:2", steps=20, guidance=4.5, count=1, model="sd15", seed=99,
    )
    assert params.model == SD1
    assert (params.width, params.height) == SD1_SIZES["3:2"]
    assert (params.steps, params.guidance, params.count, params.seed) == (20, 4.5, 1, 99)


def test_negative_option_and_no_are_joined(catalogue: Catalogue) -> None:
    params = _resolve(catalogue, prompt="a cat --no dogs --no rain", negative="blurry")
    assert params.negative == "blurry, dogs, rain"
    # the slash option replaces the saved negative; `--no` adds to whichever applies
    assert _resolve(catalogue, defaults=SAVED, prompt="a cat --no dogs",
                    negative="  ").negative == "dogs"
    assert _resolve(catalogue, defaults=SAVED, prompt="a cat --no dogs").negative == (
        "saved neg, dogs")
    assert _resolve(catalogue, defaults=SAVED, negative="mine").negative == "mine"


def test_the_image_aspect_is_used_when_none_is_given(catalogue: Catalogue) -> None:
    params = _resolve(catalogue, has_image=True, image_size=(1920, 1080))
    assert params.aspect == Aspect(16, 9)
    assert (params.width, params.height) == (168, 96)
    assert params.strength == DEFAULT_STRENGTH
    # an explicit aspect wins over the picture's, the picture's over the saved one
    assert _resolve(catalogue, has_image=True, image_size=(1920, 1080),
                    aspect="1:1").aspect == Aspect(1, 1)
    assert _resolve(catalogue, prompt="a cat --ar 2:3", has_image=True,
                    image_size=(1920, 1080)).aspect == Aspect(2, 3)
    assert _resolve(catalogue, defaults=SAVED, has_image=True,
                    image_size=(300, 400)).aspect == Aspect(3, 4)


def test_too_wide_image_is_refused(catalogue: Catalogue) -> None:
    message = _error(catalogue, has_image=True, image_size=(2000, 400))
    assert "2000×400" in message and "4:1" in message


def test_strength_without_image_is_an_error(catalogue: Catalogue) -> None:
    for kwargs in ({"strength": 0.5}, {"prompt": "a cat --strength 0.5"}):
        message = _error(catalogue, **kwargs)  # type: ignore[arg-type]
        assert "strength" in message and "image" in message


def test_strength_with_image(catalogue: Catalogue) -> None:
    assert _resolve(catalogue, prompt="a cat --strength 0.3", has_image=True,
                    image_size=(64, 64)).strength == 0.3
    assert _resolve(catalogue, prompt="a cat --strength 0.3", strength=0.9, has_image=True,
                    image_size=(64, 64)).strength == 0.9
    message = _error(catalogue, strength=1.5, has_image=True, image_size=(64, 64))
    assert "strength" in message and "0.05" in message and "1" in message


@pytest.mark.parametrize(
    ("options", "names"),
    [
        ({"count": 0}, ["count", "1", "4"]),
        ({"count": 5}, ["count", "1", "4"]),
        ({"steps": 0}, ["steps", "1", "150"]),
        ({"steps": 151}, ["steps", "1", "150"]),
        ({"guidance": 31.0}, ["guidance", "0", "30"]),
        ({"guidance": float("nan")}, ["guidance", "0", "30"]),
        ({"guidance": float("inf")}, ["guidance", "0", "30"]),
        ({"seed": -1}, ["seed", "0", "4294967295"]),
        ({"seed": 2**32}, ["seed", "0", "4294967295"]),
        ({"aspect": "5:1"}, ["aspect", "4:1"]),
        ({"aspect": "wide"}, ["aspect"]),
    ],
)
def test_out_of_range_options(catalogue: Catalogue, options: dict[str, object],
                              names: list[str]) -> None:
    message = _error(catalogue, **options)  # type: ignore[arg-type]
    for name in names:
        assert name in message


def test_out_of_range_saved_settings_are_errors_too(catalogue: Catalogue) -> None:
    assert "steps" in _error(catalogue, defaults=UserSettings(user_id=1, steps=500))


def test_unknown_model_lists_accepted_names(catalogue: Catalogue) -> None:
    for kwargs in ({"model": "nope"}, {"prompt": "a cat --model nope"}):
        message = _error(catalogue, **kwargs)  # type: ignore[arg-type]
        assert "`nope`" in message
        for name in ("tiny", "sd15", "xl"):
            assert name in message


def test_unknown_sampler_lists_accepted_names(catalogue: Catalogue) -> None:
    message = _error(catalogue, prompt="a cat --sampler heun")
    assert "`heun`" in message
    for name in SAMPLERS:
        assert name in message


@pytest.mark.parametrize("count", [1, 2, 3, 4])
def test_random_seeds_keep_every_seed_in_range(catalogue: Catalogue,
                                               monkeypatch: pytest.MonkeyPatch,
                                               count: int) -> None:
    # the largest seed random.randint may return must still leave room for seed + count - 1
    monkeypatch.setattr(random, "randint", lambda low, high: high)
    params = _resolve(catalogue, count=count)
    assert params.seed + params.count - 1 == limits.SEED_MAX
    monkeypatch.setattr(random, "randint", lambda low, high: low)
    assert _resolve(catalogue, count=count).seed == limits.SEED_MIN


def test_random_seeds_vary_and_stay_in_range() -> None:
    seeds = {random_seed(4) for _ in range(200)}
    assert len(seeds) > 190
    assert all(limits.SEED_MIN <= seed <= limits.SEED_MAX - 3 for seed in seeds)


def test_given_seed_is_kept(catalogue: Catalogue) -> None:
    assert _resolve(catalogue, prompt="a cat --seed 42").seed == 42
    assert _resolve(catalogue, seed=0).seed == 0


def test_a_saved_model_the_server_removed_falls_back_to_the_default(
        catalogue: Catalogue) -> None:
    params = _resolve(catalogue, defaults=UserSettings(user_id=1, model="anime"))
    assert params.model == TINY
    # an explicit unknown model is still an error naming what exists
    assert "Unknown model `anime`" in _error(catalogue, "a cat --model anime")


def test_a_negative_prompt_needing_too_many_chunks_is_refused(catalogue: Catalogue) -> None:
    breaks = " BREAK ".join(["blurry"] * 5)
    assert _resolve(catalogue, negative=breaks).negative == breaks
    # the option, the saved default and `--no` make one negative prompt, counted together
    message = _error(catalogue, f"a cat --no {breaks}", negative=breaks)
    assert message == (
        "The negative prompt needs at least 9 chunks of 75 tokens; at most 8 are allowed (each "
        "`BREAK` starts a new chunk)")
    assert "at least 9" in _error(catalogue, f"a cat --no {breaks}",
                                  UserSettings(user_id=1, negative=breaks))
