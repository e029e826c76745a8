"""Pure parsing of `/imagine` prompts: Midjourney `--parameters` and `::` weights, LoRA tags,
and how many 75-token chunks a prompt needs at least."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from bot import limits
from bot.engine.prompting import (  # noqa: F401  (the prompt syntax the bot's users write)
    NUMBER,
    PromptError,
    WeightedPart,
    check_chunks,
    chunks_at_least,
    chunks_message,
    format_number,
    lora_tag,
    parse_lora_list,
    parse_lora_tags,
    parse_weighted_parts,
    strip_lora_tags,
    tokens_at_least,
    with_lora_tags,
)


@dataclass(frozen=True)
class Aspect:
    width: int
    height: int

    def __str__(self) -> str:
        return f"{self.width}:{self.height}"

    @property
    def ratio(self) -> float:
        return self.width / self.height


@dataclass(frozen=True)
class ParsedPrompt:
    """A prompt split into its text, its `::` parts and the parameters given inline."""

    text: str
    parts: tuple[WeightedPart, ...]
    negative: str | None = None
    aspect: Aspect | None = None
    seed: int | None = None
    steps: int | None = None
    guidance: float | None = None
    count: int | None = None
    model: str | None = None
    sampler: str | None = None
    strength: float | None = None
    # `<lora:name:weight>` tags of the text, in order; the text keeps them (as AUTOMATIC1111 does),
    # and `parts` are of the text without them.
    loras: tuple[tuple[str, float], ...] = ()
    control_weight: float | None = None  # --cw
    image_weight: float | None = None  # --iw
    style_weight: float | None = None  # --sw
    style_reference: bool = False  # --sref
    draft: bool = False  # `--draft`: a fast run (SD_DRAFT_MODEL), to Enhance later

    def to_text(self) -> str:
        """The canonical text of this prompt; parsing it gives back an equal `ParsedPrompt`."""
        words = [self.text]
        for flag, value in (
            ("ar", self.aspect), ("seed", self.seed), ("steps", self.steps),
            ("cfg", self.guidance), ("n", self.count), ("model", self.model),
            ("sampler", self.sampler), ("strength", self.strength), ("cw", self.control_weight),
            ("iw", self.image_weight), ("sw", self.style_weight), ("no", self.negative),
        ):
            if value is not None:
                words.append(f"--{flag} {format_number(value)}")
        if self.style_reference:
            words.append("--sref")
        if self.draft:
            words.append("--draft")
        return " ".join(words)


# A parameter starts at `--name` (or `—name`, which phones produce from `--`) after white space.
_FLAG = re.compile(r"(?:^|(?<=\s))(?:--|—)(?=[A-Za-z])")
_FLAG_NAME = re.compile(r"([A-Za-z][A-Za-z0-9_-]*)\s*(.*)", re.DOTALL)
_INT = re.compile(r"[+]?\d+")

_ALIASES = {"aspect": "ar", "guidance": "cfg"}
_FLAGS = ("ar", "aspect", "seed", "no", "steps", "cfg", "guidance", "n", "model", "sampler",
          "strength", "cw", "iw", "sw", "sref", "draft")
_SWITCHES = ("sref", "draft")  # flags without a value


def _accepted() -> str:
    return ", ".join(f"--{name}" for name in _FLAGS)


def _int_in(flag: str, raw: str, low: int, high: int) -> int:
    if not _INT.fullmatch(raw) or not low <= int(raw) <= high:
        raise PromptError(f"`--{flag}` must be a whole number from {low} to {high}, got `{raw}`")
    return int(raw)


def _float_in(flag: str, raw: str, low: float, high: float) -> float:
    value = float(raw) if NUMBER.fullmatch(raw) else math.nan
    if not low <= value <= high:  # also false for nan
        raise PromptError(f"`--{flag}` must be a number from {low:g} to {high:g}, got `{raw}`")
    return value + 0.0  # `-0` becomes 0.0, not -0.0


def parse_aspect(raw: str, flag: str = "ar") -> Aspect:
    """`16:9` → Aspect(16, 9); sides are whole numbers and the ratio is at most 4:1."""
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", raw)
    if not match:
        raise PromptError(f"`--{flag}` must look like `16:9` (two whole numbers), got `{raw}`")
    width, height = int(match[1]), int(match[2])
    if not (0 < width <= limits.ASPECT_SIDE_MAX and 0 < height <= limits.ASPECT_SIDE_MAX):
        raise PromptError(
            f"`--{flag}` sides must be from 1 to {limits.ASPECT_SIDE_MAX}, got `{raw}`")
    if max(width / height, height / width) > limits.ASPECT_MAX_RATIO:
        raise PromptError(f"`--{flag}` may be at most 4:1 or 1:4, got `{raw}`")
    return Aspect(width, height)


def parse_prompt(raw: str) -> ParsedPrompt:
    """Split `raw` into prompt text and inline parameters, checking each against SPEC limits."""
    flags = list(_FLAG.finditer(raw))
    text = (raw[:flags[0].start()] if flags else raw).strip()
    if not text:
        raise PromptError("The prompt is empty: describe the picture before any `--` parameters")
    # The text and the negative are limited like the `prompt` and `negative` options, not the
    # whole line: a limit on the line would refuse `to_text()` of a prompt it accepted (`—ar`
    # becomes `--ar`, `--cfg 7` becomes `--cfg 7.0`).
    _check_length("The prompt", text)

    values: dict[str, object] = {}
    negatives: list[str] = []
    for index, match in enumerate(flags):
        end = flags[index + 1].start() if index + 1 < len(flags) else len(raw)
        body = _FLAG_NAME.fullmatch(raw[match.end():end])
        assert body is not None  # the lookahead guarantees a letter
        written, value = body[1], body[2].strip()
        name = _ALIASES.get(written.lower(), written.lower())
        if written.lower() not in _FLAGS:
            raise PromptError(f"Unknown parameter `--{written}`. Accepted: {_accepted()}")
        if name in _SWITCHES:
            if value:
                # --sref marks the `reference` option's picture as a style; it is not a link
                hint = " (the `reference` option is the picture)" if name == "sref" else ""
                raise PromptError(f"`--{written}` takes no value{hint}, got `{value[:40]}`")
            if name in values:
                raise PromptError(f"`--{written}` is given more than once")
            values[name] = True
            continue
        if not value:
            raise PromptError(f"`--{written}` needs a value")
        if name == "no":
            negatives.append(value)
            continue
        if name in values:
            raise PromptError(f"`--{written}` is given more than once")
        values[name] = _parse_value(name, written, value)

    negative = ", ".join(negatives) if negatives else None
    if negative is not None:
        _check_length("The `--no` text", negative)
    parts = parse_weighted_parts(strip_lora_tags(text))
    check_chunks("The prompt", sum(chunks_at_least(part.text) for part in parts))
    return ParsedPrompt(
        text=text,
        parts=parts,
        negative=negative,
        aspect=values.get("ar"),  # type: ignore[arg-type]
        seed=values.get("seed"),  # type: ignore[arg-type]
        steps=values.get("steps"),  # type: ignore[arg-type]
        guidance=values.get("cfg"),  # type: ignore[arg-type]
        count=values.get("n"),  # type: ignore[arg-type]
        model=values.get("model"),  # type: ignore[arg-type]
        sampler=values.get("sampler"),  # type: ignore[arg-type]
        strength=values.get("strength"),  # type: ignore[arg-type]
        loras=parse_lora_tags(text),
        control_weight=values.get("cw"),  # type: ignore[arg-type]
        image_weight=values.get("iw"),  # type: ignore[arg-type]
        style_weight=values.get("sw"),  # type: ignore[arg-type]
        style_reference=bool(values.get("sref")),
        draft=bool(values.get("draft")),
    )


def _check_length(what: str, text: str) -> None:
    if len(text) > limits.PROMPT_MAX:
        raise PromptError(f"{what} is {len(text)} characters long; at most {limits.PROMPT_MAX} "
                          "are allowed")


# The flags that take a number, and its range (SPEC §2's limits)
_INTEGERS = {"seed": (limits.SEED_MIN, limits.SEED_MAX),
             "steps": (limits.STEPS_MIN, limits.STEPS_MAX),
             "n": (limits.COUNT_MIN, limits.COUNT_MAX)}
_DECIMALS = {"cfg": (limits.GUIDANCE_MIN, limits.GUIDANCE_MAX),
             "strength": (limits.STRENGTH_MIN, limits.STRENGTH_MAX),
             "cw": (limits.CONTROL_WEIGHT_MIN, limits.CONTROL_WEIGHT_MAX),
             "iw": (limits.IMAGE_WEIGHT_MIN, limits.IMAGE_WEIGHT_MAX),
             "sw": (limits.STYLE_WEIGHT_MIN, limits.STYLE_WEIGHT_MAX)}


def _parse_value(name: str, written: str, value: str) -> object:
    if name == "ar":
        return parse_aspect(value, written)
    if name in _INTEGERS:
        return _int_in(written, value, *_INTEGERS[name])
    if name in _DECIMALS:
        return _float_in(written, value, *_DECIMALS[name])
    # model and sampler: one word, checked against the catalogue by the caller
    if not re.fullmatch(r"[A-Za-z0-9_.+-]+", value):
        raise PromptError(f"`--{written}` takes one name, got `{value}`")
    return value.lower()


