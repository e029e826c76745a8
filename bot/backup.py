"""`python -m bot backup PATH`: a copy of the database and the images, safe while the bot runs.

The database is copied with SQLite's online backup API into a new file beside PATH, checked
(`PRAGMA integrity_check`) and only then given PATH's name, so PATH is a whole, checked copy or
nothing. The images go into one tar beside it, `PATH.images.tar`, whose members are
`images/ab/<sha256>.png`, so it unpacks into a data folder as the bot keeps it. Nothing is ever
overwritten, and since the database holds interaction tokens, every file is made readable by its
owner alone (0600; folders 0700)."""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

IMAGES_SUFFIX = ".images.tar"
FILE_MODE = 0o600
FOLDER_MODE = 0o700
# The image store's own files, `ab/<sha256>.<suffix>`; its temporary files are left out.
_STORED = re.compile(r"[0-9a-f]{2}/[0-9a-f]{64}\.[a-z]{3,4}")


class BackupError(Exception):
    """The backup cannot be made; the message says why, in one line."""


@dataclass(frozen=True)
class Backup:
    """What a backup wrote."""

    database: Path
    images: Path
    jobs: int
    database_bytes: int
    image_files: int
    images_bytes: int
    missing_images: int  # listed in the database but not in the image folder

    def report(self, source: Path, images_dir: Path) -> str:
        lines = [
            f"database: {source} → {self.database} ({_count(self.jobs, 'job')}, "
            f"{_size(self.database_bytes)}; integrity check ok)",
            f"images: {_count(self.image_files, 'file')} from {images_dir} → {self.images} "
            f"({_size(self.images_bytes)})",
        ]
        if self.missing_images:
            lines.append(f"warning: {self.missing_images} images the database lists are not in "
                         f"{images_dir}")
        return "\n".join(lines)


def _count(count: int, what: str) -> str:
    return f"{count} {what}{'' if count == 1 else 's'}"


def _size(count: int) -> str:
    return f"{count / 1_000_000:.1f} MB" if count >= 1_000_000 else f"{count / 1000:.1f} kB"


def images_archive(target: Path) -> Path:
    """Where the images of a backup at `target` go."""
    return target.with_name(target.name + IMAGES_SUFFIX)


def backup(database: Path, images_dir: Path, target: Path) -> Backup:
    """Copy `database` and the images of `images_dir` to `target` and its images archive.

    Raises `BackupError` for anything in the way: a target that exists or is the live database,
    a folder that cannot be written, a source that is not a database."""
    # 1. Check what is asked
    archive = images_archive(target)
    _check_targets(database, (target, archive))
    if not database.is_file():
        raise BackupError(f"there is no database at {database} (is DATA_DIR right?)")
    folder = target.parent
    if folder.exists() and not folder.is_dir():
        raise BackupError(f"{folder} is a file, not a folder")
    try:
        folder.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
    except OSError as error:
        raise BackupError(f"cannot use the folder {folder}: {error.strerror}") from None

    # 2. The database first: every image its copy lists is in the store by then (files are
    # written before their rows), so the archive made next holds them all.
    with _new_file(target) as partial:
        jobs, listed = _copy_database(database, partial)
        _give_name(partial, target)
    # 3. The images
    with _new_file(archive) as partial:
        count, size, archived = _archive_images(images_dir, partial)
        _give_name(partial, archive)
    return Backup(target, archive, jobs, target.stat().st_size, count, size,
                  len(listed - archived))


def _check_targets(database: Path, targets: tuple[Path, ...]) -> None:
    live = {_resolved(database.with_name(database.name + suffix))
            for suffix in ("", "-wal", "-shm", "-journal")}
    for path in targets:
        if _resolved(path) in live:
            raise BackupError(f"{path} is the live database; give the backup a new file name")
        if path.is_dir():
            raise BackupError(f"{path} is a folder; give the backup a file name, like "
                              f"{path / 'atelier.db'}")
        if os.path.lexists(path):
            raise BackupError(f"{path} already exists; a backup never overwrites a file, so "
                              "give it a new name")


def _resolved(path: Path) -> Path:
    """`path` with every symbolic link followed, also where the file itself does not exist."""
    return Path(os.path.realpath(path))


@contextlib.contextmanager
def _new_file(target: Path) -> Iterator[Path]:
    """A new, empty file of mode 0600 beside `target`, removed again unless it was named."""
    try:
        handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.",
                                        suffix=".partial")
    except OSError as error:
        raise BackupError(f"cannot write to the folder {target.parent}: "
                          f"{error.strerror}") from None
    os.close(handle)
    partial = Path(name)
    try:
        yield partial
    except OSError as error:
        raise BackupError(f"cannot write {target}: {error.strerror}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()


def _give_name(partial: Path, target: Path) -> None:
    """Give the finished file its name, never replacing a file that appeared meanwhile."""
    with open(partial, "rb") as written:
        os.fsync(written.fileno())
    try:
        os.link(partial, target)  # fails if the name is taken
    except FileExistsError:
        raise BackupError(f"{target} already exists; a backup never overwrites a file, so give "
                          "it a new name") from None
    except OSError:  # a file system without hard links
        if os.path.lexists(target):
            raise BackupError(f"{target} already exists") from None
        os.rename(partial, target)


def _copy_database(database: Path, partial: Path) -> tuple[int, set[str]]:
    """Copy `database` into `partial` and check the copy; its jobs and the image paths it lists."""
    try:
        source = sqlite3.connect(database)
        try:
            copy = sqlite3.connect(partial)
            try:
                source.backup(copy)
                # One self-contained file, not a database that expects a write-ahead log.
                copy.execute("PRAGMA journal_mode = DELETE")
                result = [row[0] for row in copy.execute("PRAGMA integrity_check")]
                if result != ["ok"]:
                    raise BackupError(f"the copy of {database} failed its integrity check: "
                                      f"{'; '.join(result)[:200]}")
                jobs = copy.execute("SELECT count(*) FROM jobs").fetchone()[0]
                listed = {row[0] for row in copy.execute("SELECT path FROM images")}
            finally:
                copy.close()
        finally:
            source.close()
    except sqlite3.Error as error:
        raise BackupError(f"cannot copy {database}: {error}") from None
    return int(jobs), listed


def _private(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mode = FOLDER_MODE if info.isdir() else FILE_MODE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _archive_images(images_dir: Path, partial: Path) -> tuple[int, int, set[str]]:
    """Write the store's images into the tar `partial`: how many, their bytes, their paths."""
    count = size = 0
    archived: set[str] = set()
    with tarfile.open(partial, "w") as tar:
        tar.addfile(_folder("images"))
        shards = sorted(entry for entry in images_dir.iterdir()
                        if entry.is_dir()) if images_dir.is_dir() else []
        for shard in shards:
            tar.addfile(_folder(f"images/{shard.name}"))
            for path in sorted(shard.iterdir()):
                relative = f"{shard.name}/{path.name}"
                if not _STORED.fullmatch(relative):
                    continue
                try:
                    info = tar.gettarinfo(path, arcname=f"images/{relative}")
                    with open(path, "rb") as data:
                        tar.addfile(_private(info), data)
                except FileNotFoundError:  # gone since it was listed
                    continue
                count += 1
                size += info.size
                archived.add(relative)
    return count, size, archived


def _folder(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mtime = int(time.time())
    return _private(info)
