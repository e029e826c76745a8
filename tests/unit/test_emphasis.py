"""AUTOMATIC1111 emphasis parsing: brackets, explicit weights, escapes, BREAK."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.engine.prompting import ROUND, SQUARE, Span, parse_emphasis


def spans(text: str) -> list[tuple[str, float]]:
    return [(span.text, round(span.weight, 6)) for span in parse_emphasis(text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a red fox", [("a red fox", 1.0)]),
        ("a (red:1.3) fox", [("a ", 1.0), ("red", 1.3), (" fox", 1.0)]),
        ("a (red) fox", [("a ", 1.0), ("red", round(ROUND, 6)), (" fox", 1.0)]),
        ("a ((red)) fox", [("a ", 1.0), ("red", round(ROUND * ROUND, 6)), (" fox", 1.0)]),
        ("a [red] fox", [("a ", 1.0), ("red", round(SQUARE, 6)), (" fox", 1.0)]),
        ("(red fox : 0.5 )", [("red fox ", 0.5)]),
        ("(a (b:2) c:0.5)", [("a ", 0.5), ("b", 1.0), (" c", 0.5)]),
        ("(red:1.2) (red:1.2)", [("red", 1.2), (" ", 1.0), ("red", 1.2)]),
        # escaped brackets are text, and take the weight of what holds them
        (r"a \(red\) fox", [("a (red) fox", 1.0)]),
        (r"(a \(b\):1.5)", [("a (b)", 1.5)]),
        (r"back\\slash", [("back\\slash", 1.0)]),
        # a bracket left open weighs to the end; a closing one alone is text
        ("a (red fox", [("a ", 1.0), ("red fox", round(ROUND, 6))]),
        ("a red) fox]", [("a red) fox]", 1.0)]),
        ("at 12:30 sharp", [("at 12:30 sharp", 1.0)]),
        ("x:1.2) y", [("x:1.2) y", 1.0)]),
        ("", [("", 1.0)]),
    ],
)
def test_weights(text: str, expected: list[tuple[str, float]]) -> None:
    assert spans(text) == expected


def test_explicit_weight_equals_the_bracket_it_stands_for() -> None:
    assert spans("(red)") == spans("(red:1.1)")


def test_break_starts_a_new_chunk() -> None:
    assert parse_emphasis("a cat BREAK a (dog:1.2)") == [
        Span("a cat"), Span("a ", 1.0, new_chunk=True), Span("dog", 1.2)]
    assert parse_emphasis("BREAKFAST") == [Span("BREAKFAST")]


@given(st.text(max_size=80))
def test_never_raises_and_keeps_plain_text(text: str) -> None:
    result = parse_emphasis(text)
    assert result
    if not any(character in text for character in "()[]\\") and "BREAK" not in text:
        assert result == [Span(text)]
