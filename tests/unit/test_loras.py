"""LoRA tags and the `lora` option: parsing, path tricks, checks against LORA_DIR, resolving."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from bot import limits
from bot.catalogue import Catalogue
from bot.config import ConfigError, Settings
from bot.engine import loras
from bot.engine.loras import LoraFolder, find_lora, lora_files
from bot.engine.models import describe
from bot.options import ImagineOptions, resolve
from bot.prompt import (
    PromptError,
    parse_lora_list,
    parse_lora_tags,
    parse_prompt,
    strip_lora_tags,
    with_lora_tags,
)
from storage import UserSettings

NO_DEFAULTS = UserSettings(user_id=1)


@pytest.fixture
def lora_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "loras"
    folder.mkdir()
    for name in ("detail", "Film Grain", "pixel.art-v2", ".hidden"):
        (folder / f"{name}.safetensors").write_bytes(b"")
    (folder / "notes.txt").write_text("not a LoRA")
    (folder / "nested").mkdir()
    (folder / "nested" / "inside.safetensors").write_bytes(b"")
    (tmp_path / "secret.safetensors").write_bytes(b"")  # outside LORA_DIR
    return folder


@pytest.fixture
def catalogue(lora_dir: Path) -> Catalogue:
    return Catalogue([describe("tiny", "tiny")], lora_dir)


def _resolve(catalogue: Catalogue, prompt: str, **options: object):  # type: ignore[no-untyped-def]
    catalogue.lora_names()  # as the bot refreshes the listing before resolving a prompt
    return resolve(ImagineOptions(prompt=prompt, **options), NO_DEFAULTS,  # type: ignore[arg-type]
                   catalogue)


def _error(catalogue: Catalogue, prompt: str, **options: object) -> str:
    with pytest.raises(PromptError) as caught:
        _resolve(catalogue, prompt, **options)
    return str(caught.value)


# ---- parsing ------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "loras"),
    [
        ("a fox", ()),
        ("a fox <lora:detail:0.8>", (("detail", 0.8),)),
        ("a fox <lora:detail>", (("detail", 1.0),)),
        ("<LoRA:detail:-0.5> a fox", (("detail", -0.5),)),
        ("a <lora:detail:0> fox <lora:Film Grain:1.2>", (("detail", 0.0), ("Film Grain", 1.2))),
        ("a fox <lora:detail: 0.8 >", (("detail", 0.8),)),
        ("a fox <lora:detail:>", (("detail", 1.0),)),
    ],
)
def test_tags(text: str, loras: tuple[tuple[str, float], ...]) -> None:
    assert parse_lora_tags(text) == loras
    assert parse_prompt(text).loras == loras


def test_the_text_keeps_its_tags_but_its_parts_do_not() -> None:
    parsed = parse_prompt("a cat::2 a dog <lora:detail:0.8> --seed 3")
    assert parsed.text == "a cat::2 a dog <lora:detail:0.8>"
    assert [(part.text, part.weight) for part in parsed.parts] == [("a cat", 2.0), ("a dog", 1.0)]
    assert parse_prompt(parsed.to_text()) == parsed


def test_strip_and_rewrite_tags() -> None:
    assert strip_lora_tags("a<lora:x>fox, <lora:y:2> at dusk") == "a fox, at dusk"
    assert strip_lora_tags("a  fox") == "a  fox"  # untouched without tags
    assert with_lora_tags("a fox <lora:x:1>", (("x", 0.5), ("y", 1.0))) == \
        "a fox <lora:x:0.5> <lora:y:1.0>"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("<lora:../secret>", ["without folders"]),
        ("<lora:../../etc/passwd>", ["without folders"]),
        ("<lora:/etc/passwd>", ["without folders"]),
        ("<lora:nested/inside>", ["without folders"]),
        ("<lora:nested\\inside>", ["without folders"]),
        ("<lora:.hidden>", ["without folders"]),
        ("<lora:a*b>", ["letters, digits"]),
        ("<lora:>", ["needs a name"]),
        ("<lora:detail:abc>", ["detail", "-5 to 5", "abc"]),
        ("<lora:detail:9>", ["-5 to 5"]),
        ("<lora:detail:nan>", ["-5 to 5"]),
        ("<lora:detail:0.5:0.5>", ["-5 to 5"]),
        ("<lora:detail> <lora:DETAIL:2>", ["more than once"]),
        ("".join(f"<lora:l{i}>" for i in range(limits.LORAS_MAX + 1)), ["at most 5 LoRAs"]),
    ],
)
def test_bad_tags_are_refused(text: str, words: list[str]) -> None:
    with pytest.raises(PromptError) as caught:
        parse_prompt("a fox " + text)
    assert all(word in str(caught.value) for word in words), caught.value


def test_the_option_list() -> None:
    assert parse_lora_list("detail:0.8, Film Grain ,, style") == (
        ("detail", 0.8), ("Film Grain", 1.0), ("style", 1.0))
    with pytest.raises(PromptError, match="without folders"):
        parse_lora_list("../secret:1")


# ---- LORA_DIR -----------------------------------------------------------------------------------

def test_only_safetensors_files_directly_in_the_folder_are_loras(lora_dir: Path) -> None:
    files = lora_files(lora_dir)
    assert sorted(files) == ["Film Grain", "detail", "pixel.art-v2"]
    assert find_lora(files, "film grain") == "Film Grain"  # case does not matter
    assert find_lora(files, "secret") is None
    assert lora_files(None) == {} and lora_files(lora_dir / "missing") == {}


def test_resolve_checks_names_and_sorts(catalogue: Catalogue) -> None:
    params = _resolve(catalogue, "a fox <lora:film grain:0.6> <lora:detail>")
    assert params.loras == (("Film Grain", 0.6), ("detail", 1.0))
    assert params.prompt == "a fox <lora:film grain:0.6> <lora:detail>"  # as typed


@pytest.mark.parametrize("name", ["nope", "secret", "inside", "notes"])
def test_unknown_names_list_the_loras_there_are(catalogue: Catalogue, name: str) -> None:
    error = _error(catalogue, f"a fox <lora:{name}>")
    assert error == (f"Unknown LoRA `{name}`. Accepted: Film Grain, detail, pixel.art-v2")


def test_path_tricks_are_refused_before_any_lookup(catalogue: Catalogue) -> None:
    assert "without folders" in _error(catalogue, "a fox <lora:../secret>")
    assert "without folders" in _error(catalogue, "a fox", lora="../secret")


def test_the_option_adds_tags_and_wins_over_the_prompt(catalogue: Catalogue) -> None:
    params = _resolve(catalogue, "a fox <lora:detail:0.2>", lora="DETAIL:0.9, pixel.art-v2")
    assert params.loras == (("detail", 0.9), ("pixel.art-v2", 1.0))
    assert params.prompt == "a fox <lora:detail:0.9> <lora:pixel.art-v2:1.0>"
    # what was stored parses back to the same LoRAs (rerolls, variations, restarts)
    assert parse_lora_tags(params.prompt) == params.loras


def test_the_option_respects_the_limits(catalogue: Catalogue) -> None:
    assert "at most 1000" in _error(catalogue, "x" * 990, lora="detail")
    assert "at most 5 LoRAs" in _error(
        catalogue, "a fox <lora:a> <lora:b> <lora:c>", lora="d, e, f")


def test_without_lora_dir(lora_dir: Path) -> None:
    catalogue = Catalogue([describe("tiny", "tiny")])
    assert catalogue.lora_names() == []
    assert "LORA_DIR is not set" in _error(catalogue, "a fox <lora:detail>")
    assert _resolve(catalogue, "a fox").loras == ()


def test_new_files_are_seen_without_a_restart(catalogue: Catalogue, lora_dir: Path) -> None:
    assert "fresh" not in catalogue.lora_names()
    (lora_dir / "fresh.safetensors").write_bytes(b"")
    assert "fresh" in catalogue.lora_names()
    assert _resolve(catalogue, "a fox <lora:fresh>").loras == (("fresh", 1.0),)


def test_the_listing_is_kept_until_the_folder_changes(lora_dir: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    listings: list[Path] = []

    def listing(folder: Path) -> dict[str, Path]:
        listings.append(folder)
        return lora_files(folder)

    monkeypatch.setattr(loras, "lora_files", listing)
    a_minute_ago = time.time() - 60
    os.utime(lora_dir, (a_minute_ago, a_minute_ago))
    folder = LoraFolder(lora_dir)
    assert folder.listed is None
    first = folder.files()
    assert folder.files() == first == folder.listed and len(listings) == 1
    (lora_dir / "fresh.safetensors").write_bytes(b"")
    assert "fresh" in folder.files() and len(listings) == 2
    (lora_dir / "fresh.safetensors").unlink()
    assert "fresh" not in folder.files()
    assert LoraFolder(None).files() == {} and LoraFolder(lora_dir / "gone").files() == {}


def test_a_change_in_the_same_tick_of_the_folders_clock_is_seen(lora_dir: Path) -> None:
    now = time.time_ns()
    os.utime(lora_dir, ns=(now, now))
    folder = LoraFolder(lora_dir)
    assert "fresh" not in folder.files()
    (lora_dir / "fresh.safetensors").write_bytes(b"")
    os.utime(lora_dir, ns=(now, now))  # a coarse clock: the folder's time has not moved
    assert "fresh" in folder.files()


def test_lora_checks_never_read_the_disk(lora_dir: Path) -> None:
    catalogue = Catalogue([describe("tiny", "tiny")], lora_dir)
    with pytest.raises(RuntimeError, match="refresh_loras"):
        catalogue.lora("detail")  # a caller that did not list the folder first
    catalogue.lora_names()
    (lora_dir / "detail.safetensors").unlink()
    assert catalogue.lora("detail") == "detail"  # the listing it was given


def test_lora_dir_must_be_a_folder(tmp_path: Path) -> None:
    settings = Settings(discord_token="x", sd_model="tiny", lora_dir=tmp_path / "missing")
    with pytest.raises(ConfigError, match="LORA_DIR must be a folder"):
        Catalogue.from_settings(settings)
