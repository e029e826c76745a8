"""Pure parsing of `/imagine` prompts: Midjourney `--parameters` and `::` weights, LoRA tags,
and how many 75-token chunks a prompt needs at least."""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from decimal import Decimal

from bot import limits
from bot.emphasis import parse_emphasis


class PromptError(ValueError):
    """The prompt or one of its parameters is invalid; the message names it and what is allowed."""


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
class WeightedPart:
    text: str
    weight: float


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

    def to_text(self) -> str:
        """The canonical text of this prompt; parsing it gives back an equal `ParsedPrompt`."""
        words = [self.text]
        for flag, value in (
            ("ar", self.aspect), ("seed", self.seed), ("steps", self.steps),
            ("cfg", self.guidance), ("n", self.count), ("model", self.model),
            ("sampler", self.sampler), ("strength", self.strength), ("no", self.negative),
        ):
            if value is not None:
                words.append(f"--{flag} {_format_number(value)}")
        return " ".join(words)


def _format_number(value: object) -> str:
    if isinstance(value, float):
        # Positional, never `1e-05`: parameters take plain decimals only.
        return format(Decimal(repr(value)), "f")
    return str(value)


# A parameter starts at `--name` (or `—name`, which phones produce from `--`) after white space.
_FLAG = re.compile(r"(?:^|(?<=\s))(?:--|—)(?=[A-Za-z])")
_FLAG_NAME = re.compile(r"([A-Za-z][A-Za-z0-9_-]*)\s*(.*)", re.DOTALL)
_INT = re.compile(r"[+]?\d+")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")
_WEIGHT_SEPARATOR = re.compile(r"::\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))?")

# `<lora:name>` or `<lora:name:0.8>`; what is between the colons is checked by `_lora_name`.
_LORA_TAG = re.compile(r"<lora:([^:<>]*)(?::([^<>]*))?>", re.IGNORECASE)
_LORA_NAME = re.compile(r"\w[\w .+()'-]*")

_ALIASES = {"aspect": "ar", "guidance": "cfg"}
_FLAGS = ("ar", "aspect", "seed", "no", "steps", "cfg", "guidance", "n", "model", "sampler",
          "strength")


def _accepted() -> str:
    return ", ".join(f"--{name}" for name in _FLAGS)


def _int_in(flag: str, raw: str, low: int, high: int) -> int:
    if not _INT.fullmatch(raw) or not low <= int(raw) <= high:
        raise PromptError(f"`--{flag}` must be a whole number from {low} to {high}, got `{raw}`")
    return int(raw)


def _float_in(flag: str, raw: str, low: float, high: float) -> float:
    value = float(raw) if _NUMBER.fullmatch(raw) else math.nan
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


def parse_weighted_parts(text: str) -> tuple[WeightedPart, ...]:
    """Midjourney multi-prompts: `a cat::2 a dog` → ((`a cat`, 2.0), (`a dog`, 1.0))."""
    parts: list[WeightedPart] = []
    position = 0
    for match in _WEIGHT_SEPARATOR.finditer(text):
        segment = text[position:match.start()].strip()
        weight = float(match[1]) if match[1] is not None else 1.0
        if not segment:
            raise PromptError("Every `::` weight needs some text before it")
        if not math.isfinite(weight):
            raise PromptError(f"The `::` weight after `{segment[-20:]}` is too large")
        parts.append(WeightedPart(segment, weight))
        position = match.end()
    tail = text[position:].strip()
    if tail:
        parts.append(WeightedPart(tail, 1.0))
    if len(parts) > limits.MULTI_PROMPT_PARTS_MAX:
        raise PromptError(f"A prompt may have at most {limits.MULTI_PROMPT_PARTS_MAX} `::` parts")
    if parts and sum(part.weight for part in parts) <= 0:
        raise PromptError("The `::` weights must add up to more than 0")
    return tuple(parts)


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
    )


def _check_length(what: str, text: str) -> None:
    if len(text) > limits.PROMPT_MAX:
        raise PromptError(f"{what} is {len(text)} characters long; at most {limits.PROMPT_MAX} "
                          "are allowed")


def _parse_value(name: str, written: str, value: str) -> object:
    if name == "ar":
        return parse_aspect(value, written)
    if name == "seed":
        return _int_in(written, value, limits.SEED_MIN, limits.SEED_MAX)
    if name == "steps":
        return _int_in(written, value, limits.STEPS_MIN, limits.STEPS_MAX)
    if name == "n":
        return _int_in(written, value, limits.COUNT_MIN, limits.COUNT_MAX)
    if name == "cfg":
        return _float_in(written, value, limits.GUIDANCE_MIN, limits.GUIDANCE_MAX)
    if name == "strength":
        return _float_in(written, value, limits.STRENGTH_MIN, limits.STRENGTH_MAX)
    # model and sampler: one word, checked against the catalogue by the caller
    if not re.fullmatch(r"[A-Za-z0-9_.+-]+", value):
        raise PromptError(f"`--{written}` takes one name, got `{value}`")
    return value.lower()


# ---- 75-token chunks ---------------------------------------------------------------------------

# CLIP's tokenizer splits text into runs of letters, single digits and runs of other characters
# before its byte-pair merges, so each letter run and each digit is at least one token.
_TOKEN_FLOOR = re.compile(r"[^\W\d_]+|\d")
# Dropped before counting, which can only lower the count: control and format characters, which
# some tokenizers drop, and characters this Python does not know (a newer tokenizer may know them
# as letters, joining the runs on either side).
_UNCOUNTED = frozenset(("Cc", "Cf", "Cn"))


def tokens_at_least(text: str) -> int:
    """A floor on the tokens of `text` for CLIP's tokenizer, counted without it."""
    text = "".join(ch for ch in text
                   if ch.isspace() or unicodedata.category(ch) not in _UNCOUNTED)
    return len(_TOKEN_FLOOR.findall(unicodedata.normalize("NFC", text)))


def chunks_at_least(text: str) -> int:
    """At least how many chunks of 75 tokens the text encoder needs for `text` (one `::` part,
    or a negative prompt): each `BREAK` starts a new chunk, and a chunk holds 75 tokens."""
    counts = [0]
    for span in parse_emphasis(text):
        if span.new_chunk:
            counts.append(0)
        counts[-1] += tokens_at_least(span.text)
    *before, last = counts
    # As the encoder lays them out: a chunk before every `BREAK`, even an empty one, and none
    # for nothing after the last `BREAK`.
    if not before:
        return max(1, math.ceil(last / limits.PROMPT_CHUNK_TOKENS))
    return (sum(max(1, math.ceil(tokens / limits.PROMPT_CHUNK_TOKENS)) for tokens in before)
            + math.ceil(last / limits.PROMPT_CHUNK_TOKENS))


def chunks_message(what: str, needed: int, *, at_least: bool = False, parts: bool = True) -> str:
    """Why `what` (`The prompt`, `The negative prompt`) is refused: it needs `needed` chunks;
    `parts` when its `::` parts are encoded each on its own (prompts, not negative prompts)."""
    why = "each `BREAK` starts a new chunk" + (
        ", and each `::` part has chunks of its own" if parts else "")
    return (f"{what} needs {'at least ' if at_least else ''}{needed} chunks of "
            f"{limits.PROMPT_CHUNK_TOKENS} tokens; at most {limits.PROMPT_CHUNKS_MAX} are allowed "
            f"({why})")


def check_chunks(what: str, needed: int, *, parts: bool = True) -> None:
    """Refuse `what` if it needs more chunks than allowed (`needed` from `chunks_at_least`)."""
    if needed > limits.PROMPT_CHUNKS_MAX:
        raise PromptError(chunks_message(what, needed, at_least=True, parts=parts))


# ---- LoRA tags ----------------------------------------------------------------------------------

def _lora_name(raw: str) -> str:
    """A LoRA's name as written; names are looked up among LORA_DIR's files, never used as paths,
    and anything that looks like a path is refused outright."""
    name = raw.strip()
    if not name:
        raise PromptError("A LoRA tag needs a name, like `<lora:name:0.8>`")
    if "/" in name or "\\" in name or ".." in name or name.startswith("."):
        raise PromptError(f"LoRA names are file names in LORA_DIR, without folders or `..`; "
                          f"got `{name[:40]}`")
    if not _LORA_NAME.fullmatch(name):
        raise PromptError(f"LoRA names may hold letters, digits, spaces and `_ - . + ( ) '`; "
                          f"got `{name[:40]}`")
    return name


def _lora_weight(name: str, raw: str | None) -> float:
    if raw is None or not raw.strip():
        return 1.0
    value = float(raw) if _NUMBER.fullmatch(raw.strip()) else math.nan
    if not limits.LORA_WEIGHT_MIN <= value <= limits.LORA_WEIGHT_MAX:  # also false for nan
        raise PromptError(f"The weight of LoRA `{name}` must be a number from "
                          f"{limits.LORA_WEIGHT_MIN:g} to {limits.LORA_WEIGHT_MAX:g}, got `{raw}`")
    return value + 0.0


def _check_loras(loras: list[tuple[str, float]]) -> tuple[tuple[str, float], ...]:
    seen: set[str] = set()
    for name, _ in loras:
        if name.lower() in seen:
            raise PromptError(f"The LoRA `{name}` is given more than once")
        seen.add(name.lower())
    if len(loras) > limits.LORAS_MAX:
        raise PromptError(f"A prompt may use at most {limits.LORAS_MAX} LoRAs, got {len(loras)}")
    return tuple(loras)


def parse_lora_tags(text: str) -> tuple[tuple[str, float], ...]:
    """`a fox <lora:detail:0.8>` → (("detail", 0.8),); the weight defaults to 1."""
    return _check_loras([(name := _lora_name(match[1]), _lora_weight(name, match[2]))
                         for match in _LORA_TAG.finditer(text)])


def parse_lora_list(raw: str) -> tuple[tuple[str, float], ...]:
    """The `lora` option: `detail:0.8, style` → (("detail", 0.8), ("style", 1.0))."""
    loras = []
    for item in raw.split(","):
        if not item.strip():
            continue
        name, _, weight = item.partition(":")
        name = _lora_name(name)
        loras.append((name, _lora_weight(name, weight if weight.strip() else None)))
    return _check_loras(loras)


def strip_lora_tags(text: str) -> str:
    """The text without its LoRA tags: what the text encoder reads."""
    if not _LORA_TAG.search(text):
        return text
    return " ".join(_LORA_TAG.sub(" ", text).split())


def lora_tag(name: str, weight: float) -> str:
    return f"<lora:{name}:{_format_number(weight)}>"


def with_lora_tags(text: str, loras: tuple[tuple[str, float], ...]) -> str:
    """`text` with exactly `loras` as its tags, written at its end."""
    return " ".join([strip_lora_tags(text), *(lora_tag(name, w) for name, w in loras)]).strip()
