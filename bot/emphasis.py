"""AUTOMATIC1111 emphasis, parsed purely: `(word:1.3)`, `(word)`, `[word]`, `\\(` and `BREAK`."""

from __future__ import annotations

import re
from dataclasses import dataclass

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
