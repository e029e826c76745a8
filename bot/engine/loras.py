"""The LoRA files of `LORA_DIR` by name: the bot checks prompts against them, the worker loads them.

A name from a prompt is only ever looked up among the files listed here, never joined onto the
folder, so no prompt can make the engine read a file outside `LORA_DIR`. The listing is kept
until the folder changes (its modification time), so a folder of many LoRAs is not read again
for every prompt, while a file added is seen at once."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

LORA_SUFFIX = ".safetensors"
# A folder whose modification time is this recent may change again within the same tick of
# its clock (coarse on many file systems, 2 s on FAT) without the time moving: not trusted yet.
SETTLED_NS = 2_000_000_000


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


class LoraFolder:
    """`lora_files` of one folder, listed again only when the folder has changed. Blocking (it
    reads the disk): the bot calls `files` in a worker thread. Safe to share between threads."""

    def __init__(self, folder: Path | str | None) -> None:
        self.folder = folder
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._files: dict[str, Path] | None = None

    def files(self) -> dict[str, Path]:
        """The folder's LoRAs, listed afresh if it changed since the last listing."""
        if self.folder is None:
            return {}
        with self._lock:
            try:
                stat = os.stat(self.folder)
            except OSError:
                stamp = None
            else:
                stamp = (stat.st_dev, stat.st_ino, stat.st_mtime_ns)
            if self._files is not None and stamp is not None and stamp == self._stamp:
                return self._files
            listed_at = time.time_ns()
            files = lora_files(self.folder)
            settled = stamp is not None and listed_at - stamp[2] > SETTLED_NS
            self._files, self._stamp = files, stamp if settled else None
            return files

    @property
    def listed(self) -> dict[str, Path] | None:
        """What the last `files` call found (None before the first): no disk access."""
        return self._files
