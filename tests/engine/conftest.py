"""The real `tiny` model, built once per test session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.engine.models import describe
from bot.engine.worker import Worker, WorkerConfig


@pytest.fixture(scope="session")
def tiny_worker(tiny_model_dir: Path) -> Iterator[Worker]:
    """A CPU worker with the tiny model loaded (built once, by `tests/conftest.py`)."""
    worker = Worker(WorkerConfig(models=(describe("tiny", "tiny"),),
                                 cache_dir=str(tiny_model_dir.parent), device="cpu"))
    worker.model("tiny")  # load it here, not inside the first test's timing
    yield worker
