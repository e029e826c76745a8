"""Prompt syntax the engine reads, as pure functions both the bot and the engine use:
AUTOMATIC1111 emphasis `(word:1.3)` and `BREAK`, Midjourney `::` multi-prompts, `<lora:…>` tags, and
the 75-token chunks a prompt needs (and may need at most)."""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from decimal import Decimal

MULTI_PROMPT_PARTS_MAX = 8
# The text encoder reads a prompt in chunks of 75 tokens (CLIP's 77 less its start and end);
# each chunk lengthens every cross-attention of every step, so a prompt (all its `::` parts
# together) and a negative prompt may each need at most this many.
PROMPT_CHUNK_TOKENS = 75
PROMPT_CHUNKS_MAX = 8
LORAS_MAX = 5  # LoRAs in one prompt
LORA_WEIGHT_MIN, LORA_WEIGHT_MAX = -5.0, 5.0

NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")  # a plain decimal, as parameters take
_WEIGHT_SEPARATOR = re.compile(r"::\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))?")
# `<lora:name>` or `<lora:name:0.8>`; what is between the colons is checked by `_lora_name`.
_LORA_TAG = re.compile(r"<lora:([^:<>]*)(?::([^<>]*))?>", re.IGNORECASE)
_LORA_NAME = re.compile(r"\w[\w .+()'-]*")


class PromptError(ValueError):
    """The prompt or one of its parameters is invalid; the message names it and what is allowed."""


def format_number(value: object) -> str:
    if isinstance(value, float):
        # Positional, never `1e-05`: parameters take plain decimals only.
        return format(Decimal(repr(value)), "f")
    return str(value)


# ---- emphasis and BREAK -----------------------------------------------------------------------

ROUND = 1.1  # `(word)`
SQUARE = 1 / 1.1  # `[word]`

_TOKEN = re.compile(
    r"""
      \\[\\()\[\]]                               # an escaped bracket or backslash: itself
    | \\                                         # a lone backslash
    | \( | \[
    | :\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*\)    # `:1.3)` closes a round bracket with a weight
    | \) | \]
    | [^\\()\[\]:]+
    | :
    """,
    re.VERBOSE,
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*")


@dataclass(frozen=True)
class Span:
    """A piece of the prompt with its weight; `new_chunk` starts a new 75-token chunk before it."""

    text: str
    weight: float = 1.0
    new_chunk: bool = False


def parse_emphasis(text: str) -> list[Span]:
    """Split `text` into spans of equal weight, the way AUTOMATIC1111 reads it.

    Brackets multiply the weight of what they hold, and nest: `((a))` is 1.21. A bracket left open
    applies to the end; a closing one with no opening one is text. Never raises."""
    pieces: list[list[object]] = []  # [text, weight, new_chunk]
    open_round: list[int] = []
    open_square: list[int] = []

    def multiply(start: int, factor: float) -> None:
        for piece in pieces[start:]:
            piece[1] = float(piece[1]) * factor  # type: ignore[arg-type]

    for match in _TOKEN.finditer(text):
        token = match[0]
        if len(token) == 2 and token[0] == "\\":
            pieces.append([token[1], 1.0, False])
        elif token == "(":
            open_round.append(len(pieces))
        elif token == "[":
            open_square.append(len(pieces))
        elif match[1] is not None and open_round:
            multiply(open_round.pop(), float(match[1]))
        elif token == ")" and open_round:
            multiply(open_round.pop(), ROUND)
        elif token == "]" and open_square:
            multiply(open_square.pop(), SQUARE)
        else:
            for index, part in enumerate(_BREAK.split(token)):
                pieces.append([part, 1.0, index > 0])
    for start in open_round:
        multiply(start, ROUND)
    for start in open_square:
        multiply(start, SQUARE)

    spans: list[Span] = []
    for piece_text, weight, new_chunk in pieces:
        span = Span(str(piece_text), float(weight), bool(new_chunk))  # type: ignore[arg-type]
        if spans and not span.new_chunk and spans[-1].weight == span.weight:
            spans[-1] = Span(spans[-1].text + span.text, span.weight, spans[-1].new_chunk)
        elif span.text or span.new_chunk:
            spans.append(span)
    return spans or [Span("")]


# ---- `::` multi-prompts -------------------------------------------------------------------------

@dataclass(frozen=True)
class WeightedPart:
    text: str
    weight: float


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
    if len(parts) > MULTI_PROMPT_PARTS_MAX:
        raise PromptError(f"A prompt may have at most {MULTI_PROMPT_PARTS_MAX} `::` parts")
    if parts and sum(part.weight for part in parts) <= 0:
        raise PromptError("The `::` weights must add up to more than 0")
    return tuple(parts)


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
        return max(1, math.ceil(last / PROMPT_CHUNK_TOKENS))
    return (sum(max(1, math.ceil(tokens / PROMPT_CHUNK_TOKENS)) for tokens in before)
            + math.ceil(last / PROMPT_CHUNK_TOKENS))


def chunks_message(what: str, needed: int, *, at_least: bool = False, parts: bool = True) -> str:
    """Why `what` (`The prompt`, `The negative prompt`) is refused: it needs `needed` chunks;
    `parts` when its `::` parts are encoded each on its own (prompts, not negative prompts)."""
    why = "each `BREAK` starts a new chunk" + (
        ", and each `::` part has chunks of its own" if parts else "")
    return (f"{what} needs {'at least ' if at_least else ''}{needed} chunks of "
            f"{PROMPT_CHUNK_TOKENS} tokens; at most {PROMPT_CHUNKS_MAX} are allowed "
            f"({why})")


def check_chunks(what: str, needed: int, *, parts: bool = True) -> None:
    """Refuse `what` if it needs more chunks than allowed (`needed` from `chunks_at_least`)."""
    if needed > PROMPT_CHUNKS_MAX:
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
    value = float(raw) if NUMBER.fullmatch(raw.strip()) else math.nan
    if not LORA_WEIGHT_MIN <= value <= LORA_WEIGHT_MAX:  # also false for nan
        raise PromptError(f"The weight of LoRA `{name}` must be a number from "
                          f"{LORA_WEIGHT_MIN:g} to {LORA_WEIGHT_MAX:g}, got `{raw}`")
    return value + 0.0


def _check_loras(loras: list[tuple[str, float]]) -> tuple[tuple[str, float], ...]:
    seen: set[str] = set()
    for name, _ in loras:
        if name.lower() in seen:
            raise PromptError(f"The LoRA `{name}` is given more than once")
        seen.add(name.lower())
    if len(loras) > LORAS_MAX:
        raise PromptError(f"A prompt may use at most {LORAS_MAX} LoRAs, got {len(loras)}")
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
    return f"<lora:{name}:{format_number(weight)}>"


def with_lora_tags(text: str, loras: tuple[tuple[str, float], ...]) -> str:
    """`text` with exactly `loras` as its tags, written at its end."""
    return " ".join([strip_lora_tags(text), *(lora_tag(name, w) for name, w in loras)]).strip()
