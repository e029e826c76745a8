"""Matching a server's `BLOCKED_WORDS` against prompts, past the usual disguises. Pure.

Text and blocked words are normalised alike before they are compared: NFKC (full-width letters,
ligatures), invisible characters (zero-width spaces and joiners, soft hyphens, combining marks
drawn over letters) removed, case folded. Words are runs of letters and digits: `_`,
punctuation, symbols and spaces all separate them, so `gore_scene`, `gore.` and `(gore)` hold
the word `gore`. A blocked word matches whole words only (`class` does not hold `ass`), also in
its plural (`gores`, `gorees`, `gories` for `gory`); a blocked phrase matches its words in a row,
or run together. Each word is also read as its letters run together where they are broken up
without a space (`go_re`, `g.o.r.e`) or spaced out one by one (`g o r e`), and in a word that
mixes Latin letters with Cyrillic or Greek ones, look-alikes count as the Latin letter."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache

# Letters and digits; everything else separates words.
_WORD = re.compile(r"[^\W_]+")
# Characters that change nothing a reader sees in a word: formatting (zero-width space, joiners,
# soft hyphen, direction marks) and combining marks that do not make a letter of their own (a
# stroke or dots drawn over each letter).
_INVISIBLE = frozenset(("Cf", "Mn", "Me"))
# Cyrillic and Greek letters drawn like Latin ones (after case folding), for words that mix them.
_LOOKALIKES = str.maketrans({
    "а": "a", "в": "b", "е": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c",
    "т": "t", "у": "y", "х": "x", "і": "i", "ј": "j", "ѕ": "s", "һ": "h", "ԁ": "d", "ӏ": "l",
    "ԛ": "q", "ԝ": "w",
    "α": "a", "β": "b", "ε": "e", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t",
    "υ": "u", "χ": "x",
})


def _unmix(word: str) -> str:
    """`word` with look-alike letters made Latin, if it mixes Latin with Cyrillic or Greek."""
    if word.isascii():
        return word
    scripts = {unicodedata.name(ch, "").split(" ", 1)[0] for ch in word if ch.isalpha()}
    if "LATIN" in scripts and scripts & {"CYRILLIC", "GREEK"}:
        return word.translate(_LOOKALIKES)
    return word


def _normalised(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    text = "".join(ch for ch in text if unicodedata.category(ch) not in _INVISIBLE)
    return unicodedata.normalize("NFKC", text.casefold())


def words_of(text: str) -> list[str]:
    """The words of `text` as they are compared: normalised, case-folded, split at anything that
    is not a letter or a digit."""
    return [_unmix(word) for word in _WORD.findall(_normalised(text))]


def _spelled_out(words: list[str]) -> list[str]:
    """`words` with each run of two or more one-letter words joined: `g o r e` → `gore`."""
    joined: list[str] = []
    run: list[str] = []
    for word in [*words, ""]:
        if len(word) == 1:
            run.append(word)
            continue
        joined.extend(["".join(run)] if len(run) > 1 else run)
        run = []
        if word:
            joined.append(word)
    return joined


def _readings(text: str) -> list[list[str]]:
    """The ways `text` is read: its words; the words between two spaces run together
    (`go_re` → `gore`); runs of one-letter words run together (`g o r e` → `gore`)."""
    normalised = _normalised(text)
    words = [_unmix(word) for word in _WORD.findall(normalised)]
    unbroken = [_unmix("".join(_WORD.findall(part))) for part in normalised.split()]
    readings = [words]
    for reading in ([word for word in unbroken if word], _spelled_out(words)):
        if reading != words:
            readings.append(reading)
    return readings


def _singulars(word: str) -> set[str]:
    """What `word` may be the plural of (and itself)."""
    forms = {word}
    if word.endswith("s") and len(word) > 1:
        forms.add(word[:-1])
        if word.endswith("es"):
            forms.add(word[:-2])
        if word.endswith("ies"):
            forms.add(word[:-3] + "y")
    return forms


@lru_cache(maxsize=64)
def _phrases(words: tuple[str, ...]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Each blocked entry with its normalised words (entries that have none are left out)."""
    return tuple((entry, tuple(found)) for entry in words if (found := words_of(entry)))


def _holds(words: Sequence[set[str]], phrase: tuple[str, ...]) -> bool:
    """Whether the phrase's words follow each other somewhere in `words` (each a set of forms),
    or, for a phrase of several words, appear run together as one."""
    size = len(phrase)
    for start in range(len(words) - size + 1):
        if all(phrase[i] in words[start + i] for i in range(size)):
            return True
    together = "".join(phrase)
    return size > 1 and any(together in forms for forms in words)


def blocked_word(text: str, words: tuple[str, ...]) -> str | None:
    """The first of `words` (as configured) that `text` holds, if any."""
    if not words:
        return None
    readings = [[_singulars(word) for word in reading] for reading in _readings(text)]
    for entry, phrase in _phrases(words):
        if any(_holds(reading, phrase) for reading in readings):
            return entry
    return None
