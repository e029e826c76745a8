"""Opening the SQLite database: WAL, foreign keys, a busy timeout, numbered migrations; and
reading its migration level and integrity without changing it (`python -m bot doctor`)."""

from __future__ import annotations

import logging
import re
import sqlite3
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import aiosqlite

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 5000
_MIGRATION_NAME = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")


def migrations() -> list[tuple[int, str, str]]:
    """(version, file name, SQL) for every migration file, in order."""
    found = []
    for entry in resources.files("storage.migrations").iterdir():
        match = _MIGRATION_NAME.fullmatch(entry.name)
        if match:
            found.append((int(match[1]), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    versions = [version for version, _, _ in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations must be numbered 1..n without gaps, found {versions}")
    return found


# A migration that makes a table again (SQLite's way to change a constraint) says so with this
# line: foreign keys are then off while it runs (they cannot be switched inside a transaction, and
# rows referring to the table would otherwise be checked against it while it is gone), and every
# reference is checked before it commits.
REBUILDS_TABLES = "-- atelier: rebuilds tables"


async def migrate(db: aiosqlite.Connection) -> int:
    """Apply pending migrations, each in its own transaction; returns the schema version."""
    async with db.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    current = int(row[0]) if row else 0
    for version, name, sql in migrations():
        if version <= current:
            continue
        log.info("applying migration %s", name)
        rebuilds = REBUILDS_TABLES in sql
        async with db.execute("PRAGMA foreign_keys") as cursor:
            keys_on = bool((await cursor.fetchone() or (0,))[0])
        if rebuilds and keys_on:
            await db.execute("PRAGMA foreign_keys = OFF")
        try:
            # executescript commits anything pending first, so the BEGIN here opens a fresh
            # transaction that holds the whole file and the version bump.
            await db.executescript(f"BEGIN IMMEDIATE;\n{sql}\nPRAGMA user_version = {version};")
            if rebuilds:
                async with db.execute("PRAGMA foreign_key_check") as cursor:
                    broken = list(await cursor.fetchall())
                if broken:
                    raise sqlite3.IntegrityError(
                        f"migration {name} leaves {len(broken)} broken references, the first in "
                        f"table {broken[0][0]}")
            await db.commit()
        except sqlite3.Error:
            if db.in_transaction:
                await db.rollback()
            raise
        finally:
            if rebuilds and keys_on:
                await db.execute("PRAGMA foreign_keys = ON")
        current = version
    return current


async def open_database(path: Path) -> aiosqlite.Connection:
    """Open (creating if needed) and migrate the database at `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = await aiosqlite.connect(path, isolation_level=None)
    try:
        db.row_factory = aiosqlite.Row
        await db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        await db.execute("PRAGMA journal_mode = WAL")
        await db.execute("PRAGMA synchronous = NORMAL")
        await db.execute("PRAGMA foreign_keys = ON")
        await migrate(db)
    except BaseException:
        await db.close()
        raise
    return db


@dataclass(frozen=True)
class DatabaseState:
    """What `python -m bot doctor` reports of a database, read without changing it."""

    version: int  # PRAGMA user_version: the last migration applied
    latest: int  # the last migration this checkout has
    check: str  # PRAGMA quick_check: "ok", or its first complaint
    jobs: int | None  # None before the jobs table exists


def inspect_database(path: Path) -> DatabaseState:
    """Read the migration level and a quick integrity check of the database at `path`, read
    only (safe while the bot runs). Raises `sqlite3.Error` for a file that is no database."""
    latest = max((version for version, _, _ in migrations()), default=0)
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        # quick_check skips the index cross-checks of integrity_check: seconds, not minutes,
        # on a large history.
        check = str(db.execute("PRAGMA quick_check(1)").fetchone()[0])
        has_jobs = db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'jobs'").fetchone()
        jobs = int(db.execute("SELECT count(*) FROM jobs").fetchone()[0]) if has_jobs else None
    finally:
        db.close()
    return DatabaseState(version, latest, check, jobs)
