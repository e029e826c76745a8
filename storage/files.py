"""Content-addressed image files under `DATA_DIR/images/`, and writing files so that neither a
crash nor a full disk leaves half of one (or a stray temporary one) behind."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

# Temporary files are hidden, and named so that a sweep recognises what a stopped writer left.
TEMP_PREFIX = ".tmp-"
# Every file we keep in a sharded folder is named by the SHA-256 of a picture (thumbnails add a
# suffix); nothing else there is ours to remove.
_NAMED_BY_CONTENT = re.compile(r"[0-9a-f]{64}(?=[.-])")
SUFFIXES = (".png", ".jpg", ".webp")  # uploads stored before they were normalised kept theirs


@dataclass(frozen=True)
class StoredFile:
    path: str  # relative to the store's root
    sha256: str
    size_bytes: int


def write_file(path: Path, data: bytes, *, replace: bool) -> bool:
    """Write `data` to `path` atomically and durably: into a temporary file in the same
    folder, flushed to disk, then renamed into place and the folder synced. With `replace`
    false an existing file wins (a hard link never overwrites) and False is returned. The
    temporary file is removed whatever fails. Blocking."""
    folder = path.parent
    _make_folder(folder)
    descriptor, temporary = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX)
    renamed = False
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        if replace:
            os.replace(temporary, path)
            renamed = True
        else:
            try:
                os.link(temporary, path)
            except FileExistsError:
                return False
        _sync_folder(folder)
        return True
    finally:
        if not renamed:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)


def _make_folder(folder: Path) -> None:
    if folder.is_dir():
        return
    folder.mkdir(parents=True, exist_ok=True)
    _sync_folder(folder.parent)  # the new folder's own name must survive a crash too


def _sync_folder(folder: Path) -> None:
    """Make the names in `folder` durable (a rename is only safe once its folder is synced)."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def sweep_folder(root: Path, keep: Collection[str], before: float) -> int:
    """Remove, from the folders under `root`, the files named by a SHA-256 not in `keep` and
    the temporary files of interrupted writes, if last changed before `before` (a time), so
    that anything written since the sweep began is spared. Returns how many went. Blocking."""
    if not root.is_dir():
        return 0
    removed = 0
    for folder in root.iterdir():
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            named = _NAMED_BY_CONTENT.match(path.name)
            unused = path.name.startswith(TEMP_PREFIX) or (
                named is not None and named[0] not in keep)
            if not unused:
                continue
            try:
                if path.stat().st_mtime >= before:
                    continue
                path.unlink()
            except FileNotFoundError:
                continue
            removed += 1
    return removed


class ImageStore:
    """Files named by the SHA-256 of their bytes. Blocking: call from a worker thread."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def relative_path(self, sha256: str, suffix: str = ".png") -> str:
        return f"{sha256[:2]}/{sha256}{suffix}"

    def put(self, data: bytes, suffix: str = ".png") -> StoredFile:
        sha256 = hashlib.sha256(data).hexdigest()
        relative = self.relative_path(sha256, suffix)
        target = self.root / relative
        if target.exists():
            _touch(target)
        else:
            # Two writers racing for the same content both succeed: the first file stays.
            write_file(target, data, replace=False)
        return StoredFile(relative, sha256, len(data))

    def read(self, relative: str) -> bytes:
        path = (self.root / relative).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"{relative!r} is outside the image store")
        return path.read_bytes()

    def find(self, sha256: str) -> Path | None:
        """The file with this content, whatever its type."""
        for suffix in SUFFIXES:
            path = self.root / self.relative_path(sha256, suffix)
            if path.exists():
                return path
        return None

    def remove(self, sha256: str) -> bool:
        """Delete the file with this content; False if there was none."""
        removed = False
        for suffix in SUFFIXES:
            with contextlib.suppress(FileNotFoundError):
                (self.root / self.relative_path(sha256, suffix)).unlink()
                removed = True
        return removed

    def sweep(self, keep: Collection[str], before: float) -> int:
        """Remove the files whose SHA-256 is not in `keep` (see `sweep_folder`)."""
        return sweep_folder(self.root, keep, before)


def _touch(path: Path) -> None:
    """Mark an existing file as just written again, so that a sweep in progress (which spares
    what changed after it began) keeps it for the new job that wants it."""
    with contextlib.suppress(OSError):
        os.utime(path)
