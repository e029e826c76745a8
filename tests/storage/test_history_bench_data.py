"""`/history` and `/recall` queries on the benchmark's data: answered from indexes, never by
scanning or sorting the jobs table; and the benchmark itself runs."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from storage import Repository, Scope

BENCH = Path(__file__).resolve().parents[2] / "bench" / "history.py"
TABLE_SCAN = re.compile(r"\bSCAN (j|jobs)\b(?!_)")


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_history", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def _plans(repo: Repository, call: Callable[[], Awaitable[Any]]) -> list[tuple[str, str]]:
    """(statement, query plan) of every SELECT that `call` runs."""
    statements: list[str] = []
    await repo.db.set_trace_callback(statements.append)
    try:
        await call()
    finally:
        await repo.db.set_trace_callback(None)
    plans = []
    for sql in statements:
        if sql.lstrip().upper().startswith("SELECT"):
            async with repo.db.execute(f"EXPLAIN QUERY PLAN {sql}") as cursor:
                plans.append((sql, " / ".join(row[3] for row in await cursor.fetchall())))
    assert plans
    return plans


@pytest.fixture
async def filled(repo: Repository) -> Repository:
    await _bench().fill(repo, 3000, seed=1)
    return repo


GUILD = Scope(1001, 0, _bench().visible_channels(1001))  # a member who cannot view every channel

HISTORY: dict[str, Callable[[Repository], Awaitable[Any]]] = {
    "page 1": lambda repo: repo.history(GUILD),
    "deep page": lambda repo: repo.history(GUILD, offset=200 * 9),
    "by user": lambda repo: repo.history(GUILD, user_id=1001_000),
    "favourites": lambda repo: repo.history(GUILD, favourites_of=1001_000),
    "search": lambda repo: repo.history(GUILD, search='"red fox" sno'),
    "in a DM": lambda repo: repo.history(Scope(None, 9000_000)),
}


@pytest.mark.parametrize("name", HISTORY)
async def test_history_pages_come_from_indexes(filled: Repository, name: str) -> None:
    for sql, plan in await _plans(filled, lambda: HISTORY[name](filled)):
        assert not TABLE_SCAN.search(plan), plan
        assert "TEMP B-TREE" not in plan, plan  # newest first straight from the index
        if "count(*)" in sql:  # counted without reading the rows
            searches = [step for step in plan.split(" / ") if step.startswith("SEARCH j ")]
            assert searches and all("COVERING INDEX" in step for step in searches), plan


@pytest.mark.parametrize("typed", ["", "a", "red fo", "k3f9"])
async def test_autocomplete_never_scans_the_jobs(filled: Repository, typed: str) -> None:
    for _, plan in await _plans(filled, lambda: filled.search_prompts(GUILD, typed)):
        assert not TABLE_SCAN.search(plan), plan


def test_the_benchmark_runs_and_reports_every_query(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--jobs", "500", "--runs", "2",
         "--db", str(tmp_path / "bench.db")],
        capture_output=True, text=True, timeout=120, check=True,
    )
    assert "filled 500 jobs" in done.stdout
    for name in ("history page 1", "history page 200", "history search 'fox'",
                 "autocomplete 'red fo'", "autocomplete job id prefix", "slowest median"):
        assert name in done.stdout, done.stdout
