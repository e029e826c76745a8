"""The prompt parser: inline `--parameters`, `::` weights, and every error it names."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bot import limits
from bot.prompt import (
    Aspect,
    ParsedPrompt,
    PromptError,
    WeightedPart,
    chunks_at_least,
    parse_prompt,
)


def test_plain_prompt_has_one_part_and_no_parameters() -> None:
    parsed = parse_prompt("  a lighthouse at dusk  ")
    assert parsed == ParsedPrompt(text="a lighthouse at dusk",
                                  parts=(WeightedPart("a lighthouse at dusk", 1.0),))


def test_every_parameter() -> None:
    parsed = parse_prompt(
        "a fox in snow --ar 16:9 --seed 42 --no blur --steps 20 --cfg 6.5 --n 2"
        " --model Tiny --sampler Euler_A --strength 0.4"
    )
    assert parsed.text == "a fox in snow"
    assert parsed.aspect == Aspect(16, 9)
    assert parsed.seed == 42
    assert parsed.negative == "blur"
    assert parsed.steps == 20
    assert parsed.guidance == 6.5
    assert parsed.count == 2
    assert parsed.model == "tiny"  # names are matched case-insensitively
    assert parsed.sampler == "euler_a"
    assert parsed.strength == 0.4


@pytest.mark.parametrize(
    ("raw", "field", "value"),
    [
        ("cat --aspect 3:2", "aspect", Aspect(3, 2)),
        ("cat --guidance 9", "guidance", 9.0),
        ("cat --AR 2:3", "aspect", Aspect(2, 3)),
        ("cat --ar 16 : 9", "aspect", Aspect(16, 9)),
        ("cat --seed +7", "seed", 7),
        ("cat --seed 0", "seed", 0),
        ("cat --seed 4294967295", "seed", 4294967295),
        ("cat --steps 1", "steps", 1),
        ("cat --steps 150", "steps", 150),
        ("cat --cfg 0", "guidance", 0.0),
        ("cat --cfg 30", "guidance", 30.0),
        ("cat --cfg .5", "guidance", 0.5),
        ("cat --strength 0.05", "strength", 0.05),
        ("cat --strength 1", "strength", 1.0),
        ("cat --n 1", "count", 1),
        ("cat --n 4", "count", 4),
        ("cat --ar 4:1", "aspect", Aspect(4, 1)),
        ("cat --ar 1:4", "aspect", Aspect(1, 4)),
    ],
)
def test_parameter_values_and_aliases(raw: str, field: str, value: object) -> None:
    parsed = parse_prompt(raw)
    assert parsed.text == "cat"
    assert getattr(parsed, field) == value


def test_em_dash_counts_as_double_dash() -> None:
    parsed = parse_prompt("a harbour —ar 3:2 —seed 5 —no fog")
    assert parsed.text == "a harbour"
    assert (parsed.aspect, parsed.seed, parsed.negative) == (Aspect(3, 2), 5, "fog")


def test_dashes_inside_the_text_are_not_parameters() -> None:
    parsed = parse_prompt("a well-lit room -- 1980s, x--y --seed 3")
    assert parsed.text == "a well-lit room -- 1980s, x--y"
    assert parsed.seed == 3


def test_no_values_join_and_run_to_the_next_parameter() -> None:
    parsed = parse_prompt("a street --no people, cars --seed 1 --no rain")
    assert parsed.negative == "people, cars, rain"
    assert parsed.seed == 1


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("a cat::2 a dog::1", (("a cat", 2.0), ("a dog", 1.0))),
        ("a cat::2 a dog", (("a cat", 2.0), ("a dog", 1.0))),
        ("a cat:: a dog::-0.5", (("a cat", 1.0), ("a dog", -0.5))),
        ("red::1.5 blue::.5 green", (("red", 1.5), ("blue", 0.5), ("green", 1.0))),
        ("a cat::", (("a cat", 1.0),)),
        ("a cat", (("a cat", 1.0),)),
    ],
)
def test_multi_prompt_weights(text: str, parts: tuple[tuple[str, float], ...]) -> None:
    parsed = parse_prompt(text + " --seed 1")
    assert parsed.text == text
    assert parsed.parts == tuple(WeightedPart(t, w) for t, w in parts)


# ---- errors -------------------------------------------------------------------------------


def _error(raw: str) -> str:
    with pytest.raises(PromptError) as caught:
        parse_prompt(raw)
    return str(caught.value)


@pytest.mark.parametrize("raw", ["", "   ", "\n\t", "--ar 16:9", "  —seed 4", "--no cats"])
def test_empty_prompt(raw: str) -> None:
    assert "empty" in _error(raw)


def test_prompt_length_limit() -> None:
    assert parse_prompt("a" * limits.PROMPT_MAX).text == "a" * limits.PROMPT_MAX
    message = _error("a" * (limits.PROMPT_MAX + 1))
    assert "1001" in message and "1000" in message
    message = _error("b" * 1500 + " --seed 1")
    assert "1500" in message and "1000" in message


def test_length_limit_counts_the_text_so_canonical_text_parses_again() -> None:
    # 1000 characters as typed; the canonical `--ar` and `7.0` are longer than `—ar` and `7`.
    raw = "a" * 984 + " —ar 1:1 --cfg 7"
    assert len(raw) == limits.PROMPT_MAX
    parsed = parse_prompt(raw)
    assert len(parsed.to_text()) > limits.PROMPT_MAX
    assert parse_prompt(parsed.to_text()) == parsed


def test_negative_length_limit() -> None:
    assert parse_prompt("cat --no " + "n" * limits.PROMPT_MAX).negative == "n" * 1000
    message = _error("cat --no " + "n" * 600 + " --no " + "m" * 600)
    assert "--no" in message and "1000" in message


# ---- 75-token chunks ------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "chunks"), [
    ("", 1),
    ("a red fox", 1),
    ("a red fox BREAK in the snow", 2),
    ("BREAK a fox", 2),  # an empty chunk before the first BREAK
    ("a fox BREAK", 1),  # none for nothing after the last
    ("a BREAK BREAK b", 3),
    ("(a fox BREAK:1.2) snow", 2),  # inside brackets too
    ("BREAKFAST Break", 1),  # only the word BREAK, in capitals
    ("BREAK " * 166 + "x", 167),
    ("1" * 1000, 14),  # every digit is a token
    ("a " * 500, 7),  # every word is at least one
    ("lighthouse " * 75, 1),  # a long word may be one token
    ("lighthouse " * 76, 2),
])
def test_chunks_needed_at_least(text: str, chunks: int) -> None:
    assert chunks_at_least(text) == chunks


def test_prompts_needing_too_many_chunks_are_refused() -> None:
    eight = " BREAK ".join(["a fox"] * limits.PROMPT_CHUNKS_MAX)
    assert parse_prompt(eight).text == eight
    assert _error(eight + " BREAK a fox --seed 1") == (
        "The prompt needs at least 9 chunks of 75 tokens; at most 8 are allowed (each `BREAK` "
        "starts a new chunk, and each `::` part has chunks of its own)")
    assert "at least 167 chunks" in _error("BREAK " * 166 + "x")
    # the `::` parts count together
    assert "at least 10 chunks" in _error("::1 ".join(["a fox BREAK a dog"] * 5))
    assert parse_prompt("::1 ".join(["a fox"] * 8)).parts[7] == WeightedPart("a fox", 1.0)
    # LoRA tags are not read by the text encoder
    assert parse_prompt(eight + " <lora:detail>").loras == (("detail", 1.0),)


@pytest.mark.parametrize(
    ("raw", "names"),
    [
        ("cat --seed -1", ["--seed", "0", "4294967295", "-1"]),
        ("cat --seed 4294967296", ["--seed", "0", "4294967295"]),
        ("cat --seed 1.5", ["--seed", "0", "4294967295"]),
        ("cat --seed abc", ["--seed", "abc"]),
        ("cat --seed 1e3", ["--seed", "1e3"]),
        ("cat --steps 0", ["--steps", "1", "150"]),
        ("cat --steps 151", ["--steps", "1", "150"]),
        ("cat --steps 20.0", ["--steps", "1", "150"]),
        ("cat --n 0", ["--n", "1", "4"]),
        ("cat --n 5", ["--n", "1", "4"]),
        ("cat --n two", ["--n", "1", "4"]),
        ("cat --cfg -1", ["--cfg", "0", "30"]),
        ("cat --cfg 30.01", ["--cfg", "0", "30"]),
        ("cat --guidance 31", ["--guidance", "0", "30"]),
        ("cat --cfg seven", ["--cfg", "0", "30"]),
        ("cat --strength 0.04", ["--strength", "0.05", "1"]),
        ("cat --strength 1.5", ["--strength", "0.05", "1"]),
        ("cat --strength 0", ["--strength", "0.05", "1"]),
        ("cat --ar 16x9", ["--ar", "16:9"]),
        ("cat --ar 16:", ["--ar"]),
        ("cat --ar 1.5:1", ["--ar"]),
        ("cat --ar -16:9", ["--ar"]),
        ("cat --ar 0:1", ["--ar", "1"]),
        ("cat --ar 5:1", ["--ar", "4:1"]),
        ("cat --ar 1:5", ["--ar", "4:1"]),
        ("cat --aspect 9:40", ["--aspect", "4:1"]),
        ("cat --model two words", ["--model"]),
        ("cat --sampler a/b", ["--sampler"]),
    ],
)
def test_malformed_and_out_of_range_values(raw: str, names: list[str]) -> None:
    message = _error(raw)
    for name in names:
        assert name in message


@pytest.mark.parametrize("number", ["nan", "NaN", "inf", "-inf", "+inf", "Infinity", "1e999",
                                    "1e1", "0x1f", "1_0", "7,5"])
@pytest.mark.parametrize("flag", ["cfg", "guidance", "strength"])
def test_non_finite_and_odd_numbers_are_refused(flag: str, number: str) -> None:
    message = _error(f"cat --{flag} {number}")
    assert f"--{flag}" in message and number in message


@pytest.mark.parametrize("number", ["nan", "inf", "1e999", "-inf"])
@pytest.mark.parametrize("flag", ["seed", "steps", "n"])
def test_non_finite_whole_numbers_are_refused(flag: str, number: str) -> None:
    assert f"--{flag}" in _error(f"cat --{flag} {number}")


@pytest.mark.parametrize("flag", ["--size", "--quality", "--q", "—stylize", "--seeds"])
def test_unknown_flag_lists_accepted_ones(flag: str) -> None:
    message = _error(f"a cat {flag} 2")
    assert flag.lstrip("-—") in message
    for accepted in ("--ar", "--aspect", "--seed", "--no", "--steps", "--cfg", "--guidance",
                     "--n", "--model", "--sampler", "--strength"):
        assert accepted in message


@pytest.mark.parametrize(
    ("raw", "flag"),
    [
        ("cat --seed 1 --seed 2", "--seed"),
        ("cat --ar 1:1 --aspect 2:3", "--aspect"),
        ("cat --cfg 3 --guidance 4", "--guidance"),
        ("cat --steps 3 --steps 3", "--steps"),
        ("cat --model a --model b", "--model"),
    ],
)
def test_repeated_flags(raw: str, flag: str) -> None:
    message = _error(raw)
    assert flag in message and "more than once" in message


@pytest.mark.parametrize("flag", ["ar", "seed", "no", "steps", "cfg", "n", "model", "sampler",
                                  "strength"])
def test_missing_value(flag: str) -> None:
    for raw in (f"cat --{flag}", f"cat --{flag}   ", f"cat --{flag} --seed 1"):
        message = _error(raw)
        assert f"--{flag}" in message and "value" in message


@pytest.mark.parametrize(
    "text", ["::2 a cat", "a cat::2 ::1", "a::-1", "a::0", "a::1 b::-1", "::"],
)
def test_bad_weights(text: str) -> None:
    assert "::" in _error(text)


def test_too_many_parts() -> None:
    many = " ".join(f"w{i}::1" for i in range(limits.MULTI_PROMPT_PARTS_MAX + 1))
    assert str(limits.MULTI_PROMPT_PARTS_MAX) in _error(many)
    fine = " ".join(f"w{i}::1" for i in range(limits.MULTI_PROMPT_PARTS_MAX))
    assert len(parse_prompt(fine).parts) == limits.MULTI_PROMPT_PARTS_MAX


def test_negative_zero_guidance_is_plain_zero() -> None:
    guidance = parse_prompt("cat --cfg -0").guidance
    assert guidance == 0.0 and str(guidance) == "0.0"


def test_weights_must_be_finite() -> None:
    huge = "9" * 400  # float() of this is inf; blending with it would give NaN embeddings
    assert "::" in _error(f"a::{huge} b::-{huge}")
    assert "::" in _error(f"a::{huge}")


# ---- properties ---------------------------------------------------------------------------

_FRAGMENTS = st.sampled_from([
    " ", "  ", "\n", "--", "—", "-", ":", "::", "::-", ".", "+", "-0", "0", "1", "4", "9", "16:9",
    "1:5", "ar", "aspect", "seed", "no", "steps", "cfg", "guidance", "n", "model", "sampler",
    "strength", "cat", "Dog", "é", "🦊", "e5", "nan", "inf", "0.00001", "1e-7", "00", "x",
])
_PIECES = st.lists(st.one_of(_FRAGMENTS, st.text(max_size=3)), max_size=30).map("".join)
_PROMPTS = st.one_of(
    st.text(max_size=60),
    _PIECES,
    # near the length limit, where canonical text is longer than what was typed
    st.builds(lambda n, rest: "x" * n + rest, st.integers(950, 1001), _PIECES),
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_PROMPTS)
@example("a --cfg 0.00001")
@example("a --cfg 0.0000001 --strength 0.05")
@example("a --cfg -0")
@example("a" * 992 + " —ar 1:1")
@example("a" * 993 + " --cfg 7")
def test_parse_only_raises_prompt_error_and_round_trips(raw: str) -> None:
    try:
        parsed = parse_prompt(raw)
    except PromptError:
        return
    assert parsed.text and parsed.text == parsed.text.strip()
    assert parse_prompt(parsed.to_text()) == parsed


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="-—"),
                 min_size=1, max_size=40).filter(lambda t: t.strip() and "::" not in t),
    seed=st.integers(limits.SEED_MIN, limits.SEED_MAX),
    steps=st.integers(limits.STEPS_MIN, limits.STEPS_MAX),
    guidance=st.floats(limits.GUIDANCE_MIN, limits.GUIDANCE_MAX),
    count=st.integers(limits.COUNT_MIN, limits.COUNT_MAX),
    strength=st.floats(limits.STRENGTH_MIN, limits.STRENGTH_MAX),
    weights=st.tuples(st.floats(limits.CONTROL_WEIGHT_MIN, limits.CONTROL_WEIGHT_MAX),
                      st.floats(limits.IMAGE_WEIGHT_MIN, limits.IMAGE_WEIGHT_MAX),
                      st.floats(limits.STYLE_WEIGHT_MIN, limits.STYLE_WEIGHT_MAX), st.booleans()),
)
def test_every_valid_value_round_trips(text: str, seed: int, steps: int, guidance: float,
                                       count: int, strength: float,
                                       weights: tuple[float, float, float, bool]) -> None:
    control, image, style, sref = weights
    parsed = ParsedPrompt(text=text.strip(), parts=(WeightedPart(text.strip(), 1.0),),
                          seed=seed, steps=steps, guidance=guidance, count=count,
                          strength=strength, aspect=Aspect(3, 2), negative="blurry, dark",
                          control_weight=control, image_weight=image, style_weight=style,
                          style_reference=sref)
    try:
        expected_parts = parse_prompt(text).parts
    except PromptError:
        return  # texts that are not prompts on their own (a stray `::` weight)
    parsed = ParsedPrompt(**{**parsed.__dict__, "parts": expected_parts})
    assert parse_prompt(parsed.to_text()) == parsed


def test_reference_and_control_weights() -> None:
    parsed = parse_prompt("a cat --cw 1.5 --iw 0 —sref --sw 250")
    assert (parsed.control_weight, parsed.image_weight, parsed.style_weight) == (1.5, 0.0, 250.0)
    assert parsed.style_reference and parsed.text == "a cat"
    assert not parse_prompt("a cat --iw 2").style_reference


@pytest.mark.parametrize(("text", "error"), [
    ("a cat --cw 2.5", "`--cw` must be a number from 0 to 2, got `2.5`"),
    ("a cat --iw 4", "`--iw` must be a number from 0 to 3, got `4`"),
    ("a cat --sw 1001", "`--sw` must be a number from 0 to 1000, got `1001`"),
    ("a cat --sref https://example.com/a.png", "`--sref` takes no value"),
    ("a cat --sref --sref", "`--sref` is given more than once"),
])
def test_weights_out_of_range_are_refused(text: str, error: str) -> None:
    with pytest.raises(PromptError, match=re.escape(error)):
        parse_prompt(text)
