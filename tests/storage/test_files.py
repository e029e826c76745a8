"""`ImageStore`: content-addressed files, written atomically and durably, never replaced, read
only inside, swept of what nothing refers to."""

from __future__ import annotations

import errno
import hashlib
import io
import os
from pathlib import Path

import pytest

from storage import ImageStore
from storage.files import TEMP_PREFIX, write_file


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


# ---- writing: temporary file, fsync, rename or link, folder synced; nothing left on failure

class _FullDisk(io.FileIO):
    """A file on a full disk: every write fails."""

    def write(self, data: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


def _disk_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "fdopen", lambda fd, *args, **kwargs: _FullDisk(fd, "wb"))


def _hidden(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.name.startswith(".")]


def test_a_full_disk_leaves_no_temporary_file(store: ImageStore,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    _disk_full(monkeypatch)
    with pytest.raises(OSError) as caught:
        store.put(b"a picture too many")
    assert caught.value.errno == errno.ENOSPC
    assert _files(store.root) == []


def test_a_failed_fsync_leaves_no_temporary_file(store: ImageStore,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(descriptor: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OSError):
        store.put(b"never durable")
    assert _files(store.root) == []


def test_writes_are_synced_before_and_after_the_rename(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(descriptor: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{descriptor}"))
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    target = tmp_path / "ab" / "picture.png"
    assert write_file(target, b"pixels", replace=True)
    assert target.read_bytes() == b"pixels"
    # the new folder's name (in its parent), the data (in the temporary file), the new name
    parent, data, folder = synced
    assert Path(data).name.startswith(TEMP_PREFIX) and Path(data).parent == target.parent
    assert (parent, folder) == (str(tmp_path), str(target.parent))
    assert _hidden(tmp_path) == []


def test_write_file_replaces_only_when_asked(tmp_path: Path) -> None:
    target = tmp_path / "thumb.jpg"
    assert write_file(target, b"old", replace=True)
    assert not write_file(target, b"new", replace=False)
    assert target.read_bytes() == b"old"
    assert write_file(target, b"new", replace=True)
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thumb.jpg"]


def test_a_full_disk_while_replacing_keeps_the_old_file(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "thumb.jpg"
    write_file(target, b"old", replace=True)
    _disk_full(monkeypatch)
    with pytest.raises(OSError):
        write_file(target, b"new", replace=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thumb.jpg"]
    assert target.read_bytes() == b"old"


def test_put_of_a_stored_picture_marks_it_written_again(store: ImageStore) -> None:
    stored = store.put(b"kept")
    path = store.root / stored.path
    os.utime(path, (1_000_000, 1_000_000))
    store.put(b"kept")
    assert path.stat().st_mtime > 1_000_000  # a sweep that began before spares it


def test_remove(store: ImageStore) -> None:
    kept, gone = store.put(b"kept"), store.put(b"gone", ".jpg")
    assert store.remove(gone.sha256)
    assert not store.remove(gone.sha256)
    assert _files(store.root) == [store.root / kept.path]


# ---- the sweep

def test_sweep_removes_what_nothing_refers_to(store: ImageStore) -> None:
    kept, orphan = store.put(b"kept"), store.put(b"orphan")
    temporary = store.root / kept.path[:2] / f"{TEMP_PREFIX}abc123"
    temporary.write_bytes(b"half a pict")
    stranger = store.root / kept.path[:2] / "notes.txt"  # not ours: left alone
    stranger.write_text("mine")
    fresh_orphan = store.put(b"written after the sweep began")
    for path in (store.root / kept.path, store.root / orphan.path, temporary, stranger):
        os.utime(path, (1_000_000, 1_000_000))
    assert store.sweep({kept.sha256}, before=2_000_000) == 2
    assert sorted(_files(store.root)) == sorted([store.root / kept.path, stranger,
                                                 store.root / fresh_orphan.path])


def test_sweep_of_a_store_never_written(tmp_path: Path) -> None:
    assert ImageStore(tmp_path / "images").sweep(set(), before=2_000_000) == 0
