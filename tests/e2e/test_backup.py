"""`python -m bot backup PATH` as an operator runs it: a checked, private copy of the database
and the images while the bot runs, and one clear line for every target it refuses."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import stat
import sys
import tarfile
from pathlib import Path

import pytest

from storage import Repository, open_database
from storage.files import ImageStore
from tests.e2e.conftest import Atelier, bot_env, finished, job_id_of, rows

pytestmark = pytest.mark.e2e


async def run_backup(data_dir: Path, target: Path | str, cwd: Path) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "backup", str(target), cwd=cwd,
        env=bot_env(data_dir=data_dir), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_a_backup_while_the_bot_runs_holds_the_jobs_and_their_images(
        atelier: Atelier, tmp_path: Path) -> None:
    message = await finished(await atelier.imagine("a red fox --seed 42", count=1))
    job_id = job_id_of(message)
    data_dir = atelier.settings.data_dir
    target = tmp_path / "backups" / "monday.db"

    code, out, err = await run_backup(data_dir, target, tmp_path)
    assert code == 0, err
    archive = tmp_path / "backups" / "monday.db.images.tar"
    [picture] = rows(atelier, "SELECT size_bytes FROM images")
    assert out.splitlines() == [
        f"database: {data_dir / 'atelier.db'} → {target} (1 job, "
        f"{target.stat().st_size / 1000:.1f} kB; integrity check ok)",
        f"images: 1 file from {data_dir / 'images'} → {archive} "
        f"({picture['size_bytes'] / 1000:.1f} kB)",
    ]
    assert err == ""
    # readable by its owner alone: the database holds interaction tokens
    assert mode(target) == 0o600 and mode(archive) == 0o600
    assert mode(target.parent) == 0o700
    assert sorted(p.name for p in target.parent.iterdir()) == ["monday.db", "monday.db.images.tar"]

    copy = sqlite3.connect(target)
    try:
        assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert copy.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # one file
        [(prompt, status)] = copy.execute("SELECT prompt, status FROM jobs WHERE id = ?",
                                          (job_id,)).fetchall()
        [(path,)] = copy.execute("SELECT path FROM images WHERE job_id = ?", (job_id,)).fetchall()
    finally:
        copy.close()
    assert (prompt, status) == ("a red fox", "done")
    with tarfile.open(archive) as tar:
        member = tar.getmember(f"images/{path}")
        assert member.mode == 0o600
        extracted = tar.extractfile(member)
        assert extracted is not None
        assert extracted.read() == message.attachment_bytes()  # the picture users saw
        assert all(m.mode == 0o700 for m in tar.getmembers() if m.isdir())
    # restored as the README says, it is the bot's data again
    restored = tmp_path / "restored"
    restored.mkdir()
    shutil.copy(target, restored / "atelier.db")
    with tarfile.open(archive) as tar:
        tar.extractall(restored, filter="data")
    repo = Repository(await open_database(restored / "atelier.db"))
    try:
        [image] = await repo.images(job_id)
    finally:
        await repo.close()
    assert ImageStore(restored / "images").read(image.path) == message.attachment_bytes()
    # the bot carries on as before
    assert (await finished(await atelier.imagine("a blue fox", count=1))).attachments
    assert rows(atelier, "SELECT count(*) FROM jobs")[0][0] == 2


@pytest.fixture
async def live_data(atelier: Atelier) -> Path:
    """The data folder of a running bot that has made one job."""
    await finished(await atelier.imagine("a red fox", count=1))
    return atelier.settings.data_dir


async def refusal(data_dir: Path, target: Path | str, cwd: Path) -> str:
    """The one line a refused backup prints; nothing on stdout, no traceback."""
    code, out, err = await run_backup(data_dir, target, cwd)
    assert code == 2 and out == "", (code, out, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


async def test_an_existing_file_is_never_overwritten(live_data: Path, tmp_path: Path) -> None:
    kept = tmp_path / "notes.db"
    kept.write_text("my notes")
    assert await refusal(live_data, kept, tmp_path) == (
        f"atelier: backup: {kept} already exists; a backup never overwrites a file, so give it "
        "a new name")
    assert kept.read_text() == "my notes"
    # the images archive's name counts too, and nothing is left half-written
    (tmp_path / "fresh.db.images.tar").write_text("older images")
    assert "fresh.db.images.tar already exists" in await refusal(
        live_data, tmp_path / "fresh.db", tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"data", "fresh.db.images.tar", "notes.db"}


async def test_the_live_database_is_refused_however_it_is_named(
        live_data: Path, tmp_path: Path) -> None:
    database = live_data / "atelier.db"
    before = database.read_bytes()
    link = tmp_path / "shortcut.db"
    link.symlink_to(database)
    folder_link = tmp_path / "data-link"
    folder_link.symlink_to(live_data, target_is_directory=True)
    for target in (database, link, folder_link / "atelier.db",
                   live_data / ".." / live_data.name / "atelier.db", live_data / "atelier.db-wal"):
        assert await refusal(live_data, target, tmp_path) == (
            f"atelier: backup: {target} is the live database; give the backup a new file name")
    # relative to where it is run, too
    assert "is the live database" in await refusal(live_data, "atelier.db", live_data)
    assert database.read_bytes() == before


async def test_targets_that_cannot_be_written_are_named(live_data: Path, tmp_path: Path) -> None:
    assert await refusal(live_data, tmp_path, tmp_path) == (
        f"atelier: backup: {tmp_path} is a folder; give the backup a file name, like "
        f"{tmp_path / 'atelier.db'}")
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    assert await refusal(live_data, a_file / "backup.db", tmp_path) == (
        f"atelier: backup: {a_file} is a file, not a folder")
    assert "cannot" in await refusal(live_data, a_file / "deeper" / "backup.db", tmp_path)
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert await refusal(live_data, locked / "backup.db", tmp_path) == (
            f"atelier: backup: cannot write to the folder {locked}: Permission denied")


async def test_a_missing_or_broken_database_is_named(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert await refusal(empty, tmp_path / "b.db", tmp_path) == (
        f"atelier: backup: there is no database at {empty / 'atelier.db'} (is DATA_DIR right?)")
    (empty / "atelier.db").write_text("not a database")
    assert await refusal(empty, tmp_path / "b.db", tmp_path) == (
        f"atelier: backup: cannot copy {empty / 'atelier.db'}: file is not a database")
    assert not (tmp_path / "b.db").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["empty"]  # nothing half-written
