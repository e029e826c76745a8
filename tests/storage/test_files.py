"""`ImageStore`: content-addressed files, written atomically, never replaced, read only inside."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from storage import ImageStore


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "images")


def _files(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.is_file())


def test_content_addressing(store: ImageStore) -> None:
    data = b"\x89PNG fake picture"
    sha = hashlib.sha256(data).hexdigest()
    stored = store.put(data)
    assert stored.sha256 == sha
    assert stored.path == f"{sha[:2]}/{sha}.png"
    assert stored.size_bytes == len(data)
    assert (store.root / stored.path).read_bytes() == data
    assert store.put(data) == stored  # same bytes, same file, written once
    assert _files(store.root) == [store.root / stored.path]
    other = store.put(b"another picture")
    assert other.path != stored.path and len(_files(store.root)) == 2
    assert store.put(data, ".webp").path == f"{sha[:2]}/{sha}.webp"


def test_find(store: ImageStore) -> None:
    stored = store.put(b"abc")
    assert store.find(stored.sha256) == store.root / stored.path
    assert store.find("0" * 64) is None


def test_no_temporary_files_are_left(store: ImageStore) -> None:
    for i in range(5):
        store.put(bytes([i]) * 100)
    assert all(path.suffix == ".png" for path in _files(store.root))


def test_a_failed_write_leaves_nothing(store: ImageStore, monkeypatch: pytest.MonkeyPatch) -> None:
    def disk_full(source: str, target: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "link", disk_full)
    with pytest.raises(OSError):
        store.put(b"lost picture")
    assert _files(store.root) == []  # neither a half file nor a temporary one


def test_never_overwrites_an_existing_file(store: ImageStore,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    data = b"the picture"
    sha = hashlib.sha256(data).hexdigest()
    target = store.root / store.relative_path(sha)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"already here")
    store.put(data)
    assert target.read_bytes() == b"already here"
    # and when another writer creates it between the check and the link
    monkeypatch.setattr(Path, "exists", lambda self: False)
    assert store.put(data).path == store.relative_path(sha)
    monkeypatch.undo()
    assert target.read_bytes() == b"already here"
    assert _files(store.root) == [target]


def test_read(store: ImageStore) -> None:
    stored = store.put(b"pixels")
    assert store.read(stored.path) == b"pixels"
    with pytest.raises(FileNotFoundError):
        store.read("ab/" + "ab" * 32 + ".png")


@pytest.mark.parametrize("path", ["../secret.txt", "../../secret.txt", "ab/../../secret.txt",
                                  "", ".", "ab/..", "/etc/passwd"])
def test_read_refuses_paths_outside_the_store(store: ImageStore, tmp_path: Path,
                                              path: str) -> None:
    store.root.mkdir(parents=True)
    (tmp_path / "secret.txt").write_text("secret")
    with pytest.raises(ValueError, match="outside"):
        store.read(path)


def test_read_refuses_links_out_of_the_store(store: ImageStore, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    (store.root / "ab").mkdir(parents=True)
    (store.root / "ab" / "link.png").symlink_to(secret)
    with pytest.raises(ValueError, match="outside"):
        store.read("ab/link.png")
