"""Content-addressed image files under `DATA_DIR/images/`."""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StoredFile:
    path: str  # relative to the store's root
    sha256: str
    size_bytes: int


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
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
                tmp.write(data)
                tmp.flush()
                os.fsync(tmp.fileno())
            try:
                # A hard link fails if the name exists, so a file is never replaced, even when two
                # writers race for the same content.
                os.link(tmp.name, target)
            except FileExistsError:
                pass
            finally:
                os.unlink(tmp.name)
        return StoredFile(relative, sha256, len(data))

    def read(self, relative: str) -> bytes:
        path = (self.root / relative).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"{relative!r} is outside the image store")
        return path.read_bytes()

    def find(self, sha256: str) -> Path | None:
        """The file with this content, whatever its type (uploads keep theirs)."""
        for suffix in (".png", ".jpg", ".webp"):
            path = self.root / self.relative_path(sha256, suffix)
            if path.exists():
                return path
        return None
