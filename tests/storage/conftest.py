"""A real, migrated SQLite file per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from storage import Repository, open_database


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "atelier.db"


@pytest_asyncio.fixture
async def repo(db_path: Path) -> AsyncIterator[Repository]:
    repository = Repository(await open_database(db_path))
    try:
        yield repository
    finally:
        await repository.close()
