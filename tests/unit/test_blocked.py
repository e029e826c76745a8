"""BLOCKED_WORDS matching: whole words past disguises (case, plurals, `_`, zero-width and
full-width characters, spaced-out letters, look-alike letters), and few false alarms."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.blocked import blocked_word, words_of

BLOCKED = ("gore", "blood bath", "ass", "gory")


@pytest.mark.parametrize(("text", "found"), [
    ("a GORE scene", "gore"),
    ("two gores", "gore"),  # plurals
    ("gorees", "gore"),
    ("the gories", "gory"),
    ("asses", "ass"),
    ("bloody_gore", "gore"),  # `_` and punctuation separate words
    ("gore_scene", "gore"),
    ("(gore), [gore]", "gore"),
    ("GORE's aftermath", "gore"),
    ("ｇｏｒｅ", "gore"),  # full-width
    ("Ｇore", "gore"),
    ("go\u200bre", "gore"),  # zero-width space
    ("g\u200do\u2060r\u00ade", "gore"),  # joiner, word joiner, soft hyphen
    ("go_re", "gore"),  # broken up without a space
    ("g.o.r.e", "gore"),
    ("g o r e", "gore"),  # spaced out
    ("g\u0336o\u0336r\u0336e\u0336", "gore"),  # struck through with combining marks
    ("g\u043ere", "gore"),  # a Cyrillic о among Latin letters
    ("a blood bath", "blood bath"),  # phrases: words in a row
    ("blood  baths", "blood bath"),
    ("blood_bath", "blood bath"),
    ("a bloodbath", "blood bath"),  # or run together
    ("kiss-ass", "ass"),
])
def test_disguised_words_are_found(text: str, found: str) -> None:
    assert blocked_word(text, BLOCKED) == found


@pytest.mark.parametrize("text", [
    "a class act",  # whole words only
    "grass, glasses, assassin, bass, compass",
    "a gorey costume",
    "Gorey, gorget, gorge",
    "a bloody bath",  # not the phrase
    "bath blood",
    "mass-produced",
    "a red fox, 4 k, b w, e.g. a cat",
    "Горе от ума",  # all Cyrillic: a Russian word, not a disguise
    "",
])
def test_innocent_text_is_not_blocked(text: str) -> None:
    assert blocked_word(text, BLOCKED) is None


def test_the_configured_word_is_named_and_empty_entries_are_ignored() -> None:
    assert blocked_word("GORE", ("Gore",)) == "Gore"
    assert blocked_word("anything at all", ("", "__", " ")) is None
    assert blocked_word("anything", ()) is None


def test_blocked_words_are_normalised_like_the_text() -> None:
    assert blocked_word("gore", ("ｇｏｒｅ",)) == "ｇｏｒｅ"
    assert blocked_word("blood bath", ("blood_bath",)) == "blood_bath"
    assert words_of("Ｂlood\u200b_BATH!") == ["blood", "bath"]


# ---- properties ---------------------------------------------------------------------------

_WORDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=3, max_size=10)
_SEPARATORS = st.sampled_from([" ", "_", ", ", ".", " (", ") ", "-", "\n", "/", "!"])
_INVISIBLES = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad"]


def _full_width(text: str) -> str:
    return "".join(chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" else ch for ch in text)


@st.composite
def _disguised(draw: st.DrawFn, word: str, plural: bool = True) -> str:
    """`word` as someone avoiding the filter might write it."""
    text = word
    if plural and draw(st.booleans()):
        text = text + draw(st.sampled_from(["s", "es"]))
    text = "".join(ch.upper() if draw(st.booleans()) else ch for ch in text)
    if draw(st.booleans()):
        text = _full_width(text)
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(_INVISIBLES)) + text[at:]
    return text


@settings(max_examples=300, deadline=None)
@given(data=st.data(), word=_WORDS, before=st.lists(_WORDS, max_size=4),
       after=st.lists(_WORDS, max_size=4))
def test_a_blocked_word_is_found_however_it_is_disguised(
        data: st.DataObject, word: str, before: list[str], after: list[str]) -> None:
    disguised = data.draw(_disguised(word))
    pieces = [*before, disguised, *after]
    text = pieces[0]
    for piece in pieces[1:]:
        text += data.draw(_SEPARATORS) + piece
    assert blocked_word(text, (word,)) == word


@settings(max_examples=300, deadline=None)
@given(data=st.data(), words=st.lists(_WORDS, min_size=1, max_size=6), blocked=_WORDS)
def test_disguises_change_nothing(data: st.DataObject, words: list[str], blocked: str) -> None:
    """Case, full-width letters and invisible characters never change what is found."""
    plain = " ".join(words)
    disguised = " ".join(data.draw(_disguised(word, plural=False)) for word in words)
    assert blocked_word(disguised, (blocked,)) == blocked_word(plain, (blocked,))


@settings(max_examples=300, deadline=None)
@given(words=st.lists(_WORDS, min_size=1, max_size=8), blocked=_WORDS)
def test_only_whole_words_match(words: list[str], blocked: str) -> None:
    """A blocked word is found in text of plain words only when one of them is that word or
    its plural: never inside a longer word."""
    text = " ".join(words)
    plural = {blocked, blocked + "s", blocked + "es"}
    if blocked.endswith("y"):
        plural.add(blocked[:-1] + "ies")
    assert (blocked_word(text, (blocked,)) is not None) == any(word in plural for word in words)
