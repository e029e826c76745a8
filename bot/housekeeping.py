"""Files that nothing refers to are removed: an upload whose job was refused or ended without
pictures, and, at start-up, whatever a stopped process left in the image store."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from storage import ImageStore, Repository
from storage.files import sweep_folder

log = logging.getLogger(__name__)

# The sweep spares files changed shortly before it began, so that a file system with coarse
# timestamps cannot make a file written just after the start look older than the sweep.
SWEEP_MARGIN = 2.0  # seconds


class Housekeeping:
    """Keeps `DATA_DIR/images` (and the thumbnails made of it) to what the database uses."""

    def __init__(self, store: ImageStore, repo: Repository, thumbnails: Path) -> None:
        self.store = store
        self.repo = repo
        self.thumbnails = thumbnails
        # Uploads stored for a job not saved yet: no row refers to them, but they are in use.
        # Storing and removing take turns, so a file is never removed between the two.
        self._unsaved: Counter[str] = Counter()
        self._turn = asyncio.Lock()

    @asynccontextmanager
    async def upload(self, png: bytes) -> AsyncIterator[str]:
        """Store an upload for the job saved inside the block; yields its SHA-256. When the
        block fails (the job is refused, or saving it fails) the file goes again, unless
        another row refers to the same picture."""
        async with self._turn:
            sha256 = (await asyncio.to_thread(self.store.put, png)).sha256
            self._unsaved[sha256] += 1
        try:
            yield sha256
        except Exception:
            self._saved(sha256)
            await self.release(sha256)
            raise
        self._saved(sha256)

    def _saved(self, sha256: str) -> None:
        self._unsaved[sha256] -= 1
        if self._unsaved[sha256] <= 0:
            del self._unsaved[sha256]

    async def release(self, sha256: str, besides_job: str | None = None) -> bool:
        """Remove the file with this content unless a row (other than `besides_job`'s) refers
        to it or a job is being saved with it; True when it went."""
        async with self._turn:
            if sha256 in self._unsaved or await self.repo.file_in_use(sha256, besides_job):
                return False
            removed = await asyncio.to_thread(self.store.remove, sha256)
        if removed:
            log.info("removed picture %s: no job uses it", sha256)
        return removed

    async def sweep(self) -> int:
        """Remove the pictures no `images` row or starting picture refers to, their
        thumbnails, and the temporary files of interrupted writes; returns how many files went.

        Runs beside the bot, not before it: what is written after the sweep began (a new
        upload, a resumed job's pictures, a file `ImageStore.put` found and touched) is
        spared, so nothing a new row is about to refer to is lost."""
        began = time.time() - SWEEP_MARGIN
        try:
            keep = await self.repo.files_in_use()
            if not keep:
                # No picture in the database beside a store that may hold thousands is more
                # likely a replaced or restored database than a clean slate: keep the files.
                log.info("start-up sweep skipped: the database refers to no pictures")
                return 0

            def remove() -> int:
                return (sweep_folder(self.store.root, keep, began)
                        + sweep_folder(self.thumbnails, keep, began))

            removed = await asyncio.to_thread(remove)
        except Exception:  # a failed sweep is worth a log line, never a stopped bot
            log.exception("could not sweep the image store")
            return 0
        log.info("start-up sweep: removed %d file%s nothing refers to", removed,
                 "" if removed == 1 else "s")
        return removed
