"""The repository: every SQL statement of Atelier lives here, one method per query."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import astuple, fields, replace
from typing import Any

import aiosqlite

from storage.records import (
    JOB_COLUMNS,
    ImageRecord,
    JobRecord,
    JobStatus,
    Scope,
    UserSettings,
    new_job_id,
)

_JOB_SELECT = "SELECT " + ", ".join(JOB_COLUMNS) + " FROM jobs"
# Lists of what a server made (history, search, the gallery) show jobs that made pictures: a
# `/describe` answers with words.
_HAS_PICTURES = "j.kind != 'describe'"
_IMAGE_SELECT = (
    'SELECT job_id, idx AS "index", seed, path, sha256, width, height, size_bytes, nsfw'
    " FROM images"
)
_SETTINGS_FIELDS = tuple(f.name for f in fields(UserSettings))
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_RANKED_MATCHES = 200  # autocomplete ranks this many of the newest matches


def fts_query(text: str) -> str | None:
    """Turn what a user typed into a safe FTS5 query: quoted phrases stay phrases, bare words
    must all appear, the last bare word also matches as a prefix. Operators and stray quotes are
    treated as plain text, so no input can make the query fail."""
    terms: list[str] = []
    for phrase in re.findall(r'"([^"]*)"', text):
        words = _WORD.findall(phrase)
        if words:
            terms.append('"' + " ".join(words) + '"')
    bare = _WORD.findall(re.sub(r'"[^"]*"', " ", text))
    terms.extend(f'"{word}"' for word in bare)
    if not terms:
        return None
    if bare:
        terms[-1] += "*"
    return " ".join(terms)


def _scope_clause(scope: Scope, alias: str = "") -> tuple[str, list[Any]]:
    """The jobs `scope` may see (`Scope`, SPEC §6 Visibility), as a condition and its values:
    in a server, the jobs of the channels the user can view, and their own.

    The visible channels travel as one JSON array, so the statement's text (and SQLite's
    cached plan) is the same whatever their number; SQLite reads the array once. The server
    comes first and alone, so SQLite walks a server's jobs newest first from an index and
    stops at the page's end, testing the channel and author the history indexes hold. (The
    unary `+` keeps SQLite from looking the channels up in `jobs_channel` instead, which
    would mean sorting all of them.)"""
    prefix = f"{alias}." if alias else ""
    if scope.guild_id is None:
        return f"({prefix}guild_id IS NULL AND {prefix}user_id = ?)", [scope.user_id]
    return (f"({prefix}guild_id = ? AND ({prefix}user_id = ?"
            f" OR +{prefix}channel_id IN (SELECT value FROM json_each(?))))",
            [scope.guild_id, scope.user_id, json.dumps(sorted(scope.channel_ids))])


def _scope_parts(scope: Scope, alias: str = "") -> list[tuple[str, list[Any]]]:
    """`_scope_clause` as conditions that never hold together, for counting: in a server, the
    jobs of the channels the user can view, and their own jobs in the others. Each part is
    counted from an index that holds it in one piece, testing no row's channel."""
    if scope.guild_id is None:
        return [_scope_clause(scope, alias)]
    prefix = f"{alias}." if alias else ""
    channels = json.dumps(sorted(scope.channel_ids))
    visible = f"{prefix}channel_id IN (SELECT value FROM json_each(?))"
    return [
        (f"({prefix}guild_id = ? AND {visible})", [scope.guild_id, channels]),
        (f"({prefix}guild_id = ? AND {prefix}user_id = ? AND NOT {visible})",
         [scope.guild_id, scope.user_id, channels]),
    ]


class Repository:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db
        # One connection serves every coroutine: a write must never land inside (and be rolled
        # back with) another coroutine's open transaction, so writes take turns.
        self._write_lock = asyncio.Lock()

    async def close(self) -> None:
        await self.db.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """Statements inside run together or not at all; use `self.db` directly inside."""
        async with self._write_lock:
            await self.db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                await self.db.rollback()
                raise
            await self.db.commit()

    async def _write(self, sql: str, params: Any = ()) -> aiosqlite.Cursor:
        """One statement that changes the database, in its own (automatic) transaction."""
        async with self._write_lock:
            return await self.db.execute(sql, params)

    # ---- jobs -------------------------------------------------------------------------------

    async def insert_job(self, job: JobRecord, max_active: int | None = None,
                         max_per_minute: int | None = None) -> JobRecord | None:
        """Insert `job`, unless its user already has `max_active` jobs queued or running, or
        started `max_per_minute` jobs in the last minute (then None). The checks and the insert
        are one statement, so quick commands cannot slip past the limits together. A taken id
        (1 in 10^12) is replaced by a fresh one."""
        placeholders = ", ".join(f":{name}" for name in JOB_COLUMNS)
        sql = f"INSERT INTO jobs ({', '.join(JOB_COLUMNS)}) SELECT {placeholders} WHERE 1"
        if max_active is not None:
            sql += (" AND (SELECT count(*) FROM jobs WHERE user_id = :user_id"
                    " AND status IN ('queued', 'running')) < :max_active")
        if max_per_minute is not None:
            sql += (" AND (SELECT count(*) FROM jobs WHERE user_id = :user_id"
                    " AND created_at > :created_at - 60) < :max_per_minute")
        for _ in range(5):
            values = dict(zip(JOB_COLUMNS, astuple(job), strict=True))
            values["status"] = str(job.status)
            values["kind"] = str(job.kind)
            values["max_active"] = max_active
            values["max_per_minute"] = max_per_minute
            try:
                cursor = await self._write(sql, values)
            except sqlite3.IntegrityError as error:
                if "jobs.id" not in str(error):
                    raise
                job = replace(job, id=new_job_id())
                continue
            return job if cursor.rowcount else None
        raise RuntimeError("could not find a free job id")

    async def job(self, job_id: str) -> JobRecord | None:
        """A job by id, whatever its server: for the bot's own bookkeeping, never for users."""
        async with self.db.execute(f"{_JOB_SELECT} WHERE id = ?", (job_id,)) as cursor:
            row = await cursor.fetchone()
        return JobRecord.from_row(row) if row else None

    async def job_in_scope(self, job_id: str, scope: Scope) -> JobRecord | None:
        """A job by id if `scope` may see it; a foreign job reads as missing."""
        clause, params = _scope_clause(scope)
        async with self.db.execute(
            f"{_JOB_SELECT} WHERE id = ? AND {clause}", (job_id, *params)
        ) as cursor:
            row = await cursor.fetchone()
        return JobRecord.from_row(row) if row else None

    async def active_job_count(self, user_id: int) -> int:
        async with self.db.execute(
            "SELECT count(*) FROM jobs WHERE user_id = ? AND status IN ('queued', 'running')",
            (user_id,),
        ) as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def recent_job_count(self, user_id: int, since: float) -> int:
        """How many jobs `user_id` started after `since` (a time): what the rate limit counts."""
        async with self.db.execute(
            "SELECT count(*) FROM jobs WHERE user_id = ? AND created_at > ?", (user_id, since),
        ) as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def unfinished_jobs(self) -> list[JobRecord]:
        """Jobs a stopped process left queued, running, or done but not yet delivered (and not
        given up on); oldest first."""
        async with self.db.execute(
            f"{_JOB_SELECT} WHERE status IN ('queued', 'running')"
            " OR (status = 'done' AND delivered_at IS NULL AND delivery_error IS NULL)"
            " ORDER BY created_at"
        ) as cursor:
            return [JobRecord.from_row(row) for row in await cursor.fetchall()]

    async def mark_running(self, job_id: str) -> None:
        await self._write(
            "UPDATE jobs SET status = 'running', started_at = ? WHERE id = ? AND status = 'queued'",
            (time.time(), job_id),
        )

    async def finish_job(self, job_id: str, status: JobStatus, error: str | None = None) -> bool:
        """End a job that has not ended yet as failed or cancelled; False if it already had
        (a job that made its pictures stays done whatever happens after)."""
        cursor = await self._write(
            "UPDATE jobs SET status = ?, error = ?, finished_at = ?"
            " WHERE id = ? AND status IN ('queued', 'running')",
            (str(status), error, time.time(), job_id),
        )
        return bool(cursor.rowcount)

    async def complete_job(self, job_id: str, images: Sequence[ImageRecord],
                           control_map: str | None = None) -> None:
        """Record a job's images (and the control map its ControlNet read) and mark it done,
        together or not at all."""
        async with self.transaction():
            await self.db.executemany(
                "INSERT OR REPLACE INTO images"
                " (job_id, idx, seed, path, sha256, width, height, size_bytes, nsfw)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [astuple(image) for image in images],
            )
            await self.db.execute(
                "UPDATE jobs SET status = 'done', error = NULL, finished_at = ?,"
                " control_map = coalesce(?, control_map) WHERE id = ?",
                (time.time(), control_map, job_id),
            )

    async def set_delivered(self, job_id: str, message_id: int | None) -> None:
        """The final state reached Discord: remember its message, forget the interaction token."""
        await self._write(
            "UPDATE jobs SET message_id = coalesce(?, message_id), interaction_token = NULL,"
            " delivered_at = ? WHERE id = ?",
            (message_id, time.time(), job_id),
        )

    async def set_message(self, job_id: str, message_id: int) -> None:
        await self._write("UPDATE jobs SET message_id = ? WHERE id = ?",
                          (message_id, job_id))

    async def set_channel_message(self, job_id: str, message_id: int) -> None:
        """The job is shown by channel message `message_id` from now on, no longer by its
        interaction's response (whose token has expired)."""
        await self._write(
            "UPDATE jobs SET message_id = ?, interaction_token = NULL WHERE id = ?",
            (message_id, job_id),
        )

    async def count_delivery_attempt(self, job_id: str) -> int:
        """Count one more try at showing a finished job's result; returns the count."""
        async with self._write_lock:
            async with self.db.execute(
                "UPDATE jobs SET delivery_attempts = delivery_attempts + 1 WHERE id = ?"
                " RETURNING delivery_attempts",
                (job_id,),
            ) as cursor:
                row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def give_up_delivery(self, job_id: str, reason: str) -> None:
        """Stop trying to show a finished job's result, saying why; its pictures stay."""
        await self._write(
            "UPDATE jobs SET delivery_error = ?, interaction_token = NULL"
            " WHERE id = ? AND delivered_at IS NULL",
            (reason, job_id),
        )

    async def record_deleted_message(self, message_id: int, job_id: str, index: int,
                                     user_id: int) -> None:
        """Message `message_id`, showing picture `index` of a job, was deleted by `user_id`."""
        await self._write(
            "INSERT OR IGNORE INTO deleted_messages (message_id, job_id, idx, deleted_by,"
            " deleted_at) VALUES (?, ?, ?, ?, ?)",
            (message_id, job_id, index, user_id, time.time()),
        )

    async def deleted_pictures(self, job_ids: Sequence[str]) -> dict[str, tuple[int, ...]]:
        """For each of these jobs that has any, the pictures (from 0) a deleted message showed."""
        if not job_ids:
            return {}
        marks = ", ".join("?" for _ in job_ids)
        found: dict[str, tuple[int, ...]] = {}
        async with self.db.execute(
            f"SELECT DISTINCT job_id, idx FROM deleted_messages WHERE job_id IN ({marks})"
            " ORDER BY job_id, idx", tuple(job_ids)
        ) as cursor:
            for row in await cursor.fetchall():
                found[row["job_id"]] = (*found.get(row["job_id"], ()), row["idx"])
        return found

    async def children(self, job_id: str, scope: Scope) -> list[JobRecord]:
        """The jobs made from `job_id` that `scope` may see, oldest first."""
        clause, params = _scope_clause(scope)
        async with self.db.execute(
            f"{_JOB_SELECT} WHERE parent_job = ? AND {clause} ORDER BY created_at",
            (job_id, *params),
        ) as cursor:
            return [JobRecord.from_row(row) for row in await cursor.fetchall()]

    async def job_for_message(self, message_id: int, scope: Scope) -> JobRecord | None:
        """The job whose placeholder or result is message `message_id`, if `scope` may see it."""
        clause, params = _scope_clause(scope)
        async with self.db.execute(
            f"{_JOB_SELECT} WHERE message_id = ? AND {clause} ORDER BY created_at DESC LIMIT 1",
            (message_id, *params),
        ) as cursor:
            row = await cursor.fetchone()
        return JobRecord.from_row(row) if row else None

    async def active_jobs(self, user_id: int) -> list[JobRecord]:
        """A user's queued and running jobs, in every server and DM, oldest first."""
        async with self.db.execute(
            f"{_JOB_SELECT} WHERE user_id = ? AND status IN ('queued', 'running')"
            " ORDER BY created_at",
            (user_id,),
        ) as cursor:
            return [JobRecord.from_row(row) for row in await cursor.fetchall()]

    # ---- images -----------------------------------------------------------------------------

    async def images(self, job_id: str) -> list[ImageRecord]:
        sql = f"{_IMAGE_SELECT} WHERE job_id = ? ORDER BY idx"
        async with self.db.execute(sql, (job_id,)) as cur:
            return [ImageRecord(**dict(row)) for row in await cur.fetchall()]

    async def file_in_use(self, sha256: str, besides_job: str | None = None) -> bool:
        """Whether the file with this content is a job's picture, or a picture a job other
        than `besides_job` refers to (starting picture, mask, control picture or map, a
        reference)."""
        # (reference_images holds 64-character hashes separated by commas: a hash found in
        # it is one of them)
        async with self.db.execute(
            "SELECT EXISTS (SELECT 1 FROM images WHERE sha256 = :sha)"
            " OR EXISTS (SELECT 1 FROM jobs WHERE (init_image = :sha OR mask_image = :sha"
            " OR control_image = :sha OR control_map = :sha"
            " OR instr(reference_images, :sha) > 0)"
            " AND (:job IS NULL OR id != :job))",
            {"sha": sha256, "job": besides_job},
        ) as cursor:
            row = await cursor.fetchone()
        return bool(row and row[0])

    async def files_in_use(self) -> set[str]:
        """The SHA-256 of every file a row refers to: pictures, starting pictures, masks,
        control pictures and maps, reference pictures."""
        async with self.db.execute(
            "SELECT sha256 FROM images"
            " UNION SELECT init_image FROM jobs WHERE init_image IS NOT NULL"
            " UNION SELECT mask_image FROM jobs WHERE mask_image IS NOT NULL"
            " UNION SELECT control_image FROM jobs WHERE control_image IS NOT NULL"
            " UNION SELECT control_map FROM jobs WHERE control_map IS NOT NULL"
        ) as cursor:
            found = {row[0] for row in await cursor.fetchall()}
        async with self.db.execute(
            "SELECT reference_images FROM jobs WHERE reference_images IS NOT NULL"
        ) as cursor:
            for row in await cursor.fetchall():
                found.update(row[0].split(","))
        return found

    async def complete_description(self, job_id: str, suggestions: Sequence[str]) -> bool:
        """A `/describe` job is done with its suggestions; False when it had already ended
        (cancelled)."""
        cursor = await self._write(
            "UPDATE jobs SET status = 'done', suggestions = ?, finished_at = ?"
            " WHERE id = ? AND status IN ('queued', 'running')",
            ("\n".join(suggestions), time.time(), job_id))
        return cursor.rowcount > 0

    async def images_of(self, job_ids: Sequence[str]) -> dict[str, list[ImageRecord]]:
        """The images of each of these jobs (those that have any), in order, by job id."""
        if not job_ids:
            return {}
        marks = ", ".join("?" for _ in job_ids)
        found: dict[str, list[ImageRecord]] = {}
        async with self.db.execute(
            f"{_IMAGE_SELECT} WHERE job_id IN ({marks}) ORDER BY job_id, idx", tuple(job_ids)
        ) as cursor:
            for row in await cursor.fetchall():
                found.setdefault(row["job_id"], []).append(ImageRecord(**dict(row)))
        return found

    async def image_holders(self, sha256: str) -> list[tuple[JobRecord, ImageRecord]]:
        """Every job that holds a picture with this content, with that image: whoever may see
        one of those jobs may see the picture."""
        async with self.db.execute(f"{_IMAGE_SELECT} WHERE sha256 = ?", (sha256,)) as cursor:
            images = [ImageRecord(**dict(row)) for row in await cursor.fetchall()]
        if not images:
            return []
        marks = ", ".join("?" for _ in images)
        async with self.db.execute(
            f"{_JOB_SELECT} WHERE id IN ({marks})", tuple(image.job_id for image in images)
        ) as cursor:
            jobs = {row["id"]: JobRecord.from_row(row) for row in await cursor.fetchall()}
        return [(jobs[image.job_id], image) for image in images if image.job_id in jobs]

    # ---- history and search -----------------------------------------------------------------

    async def history(
        self,
        scope: Scope,
        *,
        user_id: int | None = None,
        search: str | None = None,
        favourites_of: int | None = None,
        limit: int = 9,
        offset: int = 0,
    ) -> tuple[list[JobRecord], int]:
        """Finished jobs visible to `scope`, newest first, and how many there are in all."""
        where = ["j.status = 'done'", _HAS_PICTURES]
        params: list[Any] = []
        if user_id is not None:
            where.append("j.user_id = ?")
            params.append(user_id)
        match = fts_query(search) if search else None
        if search and match is None:
            return [], 0
        if match is not None:
            # `+`: the matches are tested while walking an index, never looked up one by one
            # in each channel (thousands of lookups for a common word).
            where.append("+j.rowid IN (SELECT rowid FROM jobs_fts WHERE jobs_fts MATCH ?)")
            params.append(match)
        if favourites_of is not None:
            where.append("j.id IN (SELECT job_id FROM favourites WHERE user_id = ?)")
            params.append(favourites_of)
        condition = " AND ".join(where)
        clause, scope_params = _scope_clause(scope, "j")
        columns = ", ".join(f"j.{name}" for name in JOB_COLUMNS)
        # The filters first: SQLite tests them in this order, and a search rules out more
        # jobs than the channels do.
        async with self.db.execute(
            f"SELECT {columns} FROM jobs j WHERE {condition} AND {clause}"
            " ORDER BY j.created_at DESC LIMIT ? OFFSET ?",
            (*params, *scope_params, limit, offset),
        ) as cursor:
            jobs = [JobRecord.from_row(row) for row in await cursor.fetchall()]
        parts = _scope_parts(scope, "j")
        counts = " + ".join(f"(SELECT count(*) FROM jobs j WHERE {condition} AND {part})"
                            for part, _ in parts)
        count_params = [value for _, part_params in parts for value in (*params, *part_params)]
        async with self.db.execute(f"SELECT {counts}", count_params) as cur:
            row = await cur.fetchone()
        return jobs, int(row[0]) if row else 0

    async def search_prompts(self, scope: Scope, text: str, limit: int = 25) -> list[JobRecord]:
        """Jobs for autocomplete: by job id prefix or full-text match (best first), else newest."""
        clause, params = _scope_clause(scope, "j")
        columns = ", ".join(f"j.{name}" for name in JOB_COLUMNS)
        match = fts_query(text)
        if match is None:
            sql = (f"SELECT {columns} FROM jobs j WHERE {clause} AND j.status = 'done'"
                   f" AND {_HAS_PICTURES} ORDER BY j.created_at DESC LIMIT ?")
            async with self.db.execute(sql, (*params, limit)) as cursor:
                return [JobRecord.from_row(row) for row in await cursor.fetchall()]
        # Ranking every match of a short prefix ("a*" matches nearly every prompt) takes a
        # tenth of a second on a big server, so only the newest matches are ranked: FTS5 walks
        # rowids (creation order) backwards and stops early.
        sql = (
            f"SELECT {', '.join(JOB_COLUMNS)} FROM ("
            f"SELECT {columns}, jobs_fts.rank AS score FROM jobs_fts"
            f" JOIN jobs j ON j.rowid = jobs_fts.rowid"
            f" WHERE jobs_fts MATCH ? AND {clause} AND j.status = 'done' AND {_HAS_PICTURES}"
            " ORDER BY jobs_fts.rowid DESC LIMIT ?"
            ") ORDER BY score, created_at DESC LIMIT ?"
        )
        async with self.db.execute(sql, (match, *params, _RANKED_MATCHES, limit)) as cursor:
            found = [JobRecord.from_row(row) for row in await cursor.fetchall()]
        token = text.strip().lower()
        if re.fullmatch(r"[a-z0-9]{2,8}", token):
            async with self.db.execute(
                f"SELECT {columns} FROM jobs j WHERE j.id >= ? AND j.id < ? AND {clause}"
                f" AND j.status = 'done' AND {_HAS_PICTURES} LIMIT ?",
                (token, token + "\uffff", *params, limit),
            ) as cursor:
                by_id = [JobRecord.from_row(row) for row in await cursor.fetchall()]
            seen = {job.id for job in by_id}
            found = by_id + [job for job in found if job.id not in seen]
        return found[:limit]

    async def first_images(self, job_ids: Sequence[str]) -> dict[str, ImageRecord]:
        """The first image of each of these jobs (those that have one), by job id."""
        if not job_ids:
            return {}
        marks = ", ".join("?" for _ in job_ids)
        async with self.db.execute(
            f"{_IMAGE_SELECT} WHERE idx = 0 AND job_id IN ({marks})", tuple(job_ids)
        ) as cursor:
            return {row["job_id"]: ImageRecord(**dict(row)) for row in await cursor.fetchall()}

    async def save_search(self, text: str) -> str:
        """Keep a `/history` search text; returns the short key that names it."""
        key = hashlib.sha256(text.encode()).hexdigest()[:16]
        await self._write(
            "INSERT OR IGNORE INTO history_searches (key, text, created_at) VALUES (?, ?, ?)",
            (key, text, time.time()),
        )
        return key

    async def saved_search(self, key: str) -> str | None:
        """The search text saved under `key`, if any."""
        async with self.db.execute(
            "SELECT text FROM history_searches WHERE key = ?", (key,)
        ) as cursor:
            row = await cursor.fetchone()
        return str(row[0]) if row else None

    async def gallery(
        self,
        scope: Scope,
        *,
        user_id: int | None = None,
        search: str | None = None,
        favourites_of: int | None = None,
        model: str | None = None,
        kind: str | None = None,
        limit: int = 48,
        offset: int = 0,
    ) -> list[JobRecord]:
        """A page of the team gallery: finished jobs `scope`'s user may see, newest first,
        filtered like `history` and also by model and kind. Not counted (counting every match
        costs more than the page): ask for one more than a page to know if another follows."""
        clause, params = _scope_clause(scope, "j")
        where = [clause, "j.status = 'done'", _HAS_PICTURES]
        match = fts_query(search) if search else None
        if search and match is None:
            return []
        for condition, value in (
            ("j.user_id = ?", user_id),
            ("j.rowid IN (SELECT rowid FROM jobs_fts WHERE jobs_fts MATCH ?)", match),
            ("j.id IN (SELECT job_id FROM favourites WHERE user_id = ?)", favourites_of),
            ("j.model = ?", model),
            ("j.kind = ?", kind),
        ):
            if value is not None:
                where.append(condition)
                params.append(value)
        columns = ", ".join(f"j.{name}" for name in JOB_COLUMNS)
        async with self.db.execute(
            f"SELECT {columns} FROM jobs j WHERE {' AND '.join(where)}"
            " ORDER BY j.created_at DESC LIMIT ? OFFSET ?",
            (*params, limit, offset),
        ) as cursor:
            return [JobRecord.from_row(row) for row in await cursor.fetchall()]

    # ---- settings and favourites ------------------------------------------------------------

    async def settings(self, user_id: int) -> UserSettings:
        columns = ", ".join(_SETTINGS_FIELDS)
        async with self.db.execute(
            f"SELECT {columns} FROM user_settings WHERE user_id = ?", (user_id,)
        ) as cursor:
            row = await cursor.fetchone()
        if row is None:
            return UserSettings(user_id)
        values = dict(row)
        values["remix"] = bool(values["remix"])
        return UserSettings(**values)

    async def save_settings(self, settings: UserSettings) -> None:
        columns = ", ".join(_SETTINGS_FIELDS)
        placeholders = ", ".join("?" for _ in _SETTINGS_FIELDS)
        updates = ", ".join(f"{name} = excluded.{name}" for name in _SETTINGS_FIELDS[1:])
        await self._write(
            f"INSERT INTO user_settings ({columns}, updated_at) VALUES ({placeholders}, ?)"
            f" ON CONFLICT (user_id) DO UPDATE SET {updates}, updated_at = excluded.updated_at",
            (*astuple(settings), time.time()),
        )

    async def reset_settings(self, user_id: int) -> None:
        await self._write("DELETE FROM user_settings WHERE user_id = ?", (user_id,))

    async def toggle_favourite(self, user_id: int, job_id: str, index: int) -> bool:
        """Flip a favourite; returns whether it is now a favourite."""
        async with self.transaction():
            cursor = await self.db.execute(
                "DELETE FROM favourites WHERE user_id = ? AND job_id = ? AND idx = ?",
                (user_id, job_id, index),
            )
            if cursor.rowcount:
                return False
            await self.db.execute(
                "INSERT INTO favourites (user_id, job_id, idx, created_at) VALUES (?, ?, ?, ?)",
                (user_id, job_id, index, time.time()),
            )
            return True

    async def favourite_indexes(self, user_id: int, job_id: str) -> set[int]:
        """The images of a job (0-based) that a user marked ❤️."""
        async with self.db.execute(
            "SELECT idx FROM favourites WHERE user_id = ? AND job_id = ?", (user_id, job_id)
        ) as cursor:
            return {int(row[0]) for row in await cursor.fetchall()}
