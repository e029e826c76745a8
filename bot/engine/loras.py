"""The LoRA files of `LORA_DIR` by name: the bot checks prompts against them, the worker loads them.

A name from a prompt is only ever looked up among the files listed here, never joined onto the
folder, so no prompt can make the engine read a file outside `LORA_DIR`."""

from __future__ import annotations

from pathlib import Path

LORA_SUFFIX = ".safetensors"


def lora_files(folder: Path | str | None) -> dict[str, Path]:
    """`name → file` for each `.safetensors` file directly in `folder` (name = the file's stem)."""
    if folder is None:
        return {}
    try:
        entries = sorted(Path(folder).iterdir())
    except OSError:
        return {}
    return {path.stem: path for path in entries
            if path.suffix.lower() == LORA_SUFFIX and not path.name.startswith(".")
            and path.is_file()}


def find_lora(files: dict[str, Path], name: str) -> str | None:
    """The file name `name` stands for: itself, or the one file that matches it ignoring case."""
    if name in files:
        return name
    matches = [stem for stem in files if stem.lower() == name.lower()]
    return matches[0] if len(matches) == 1 else None
