"""Fair batching through the real bot: users take turns, compatible jobs share a pipeline call,
and each job still has its own pictures, progress and Cancel."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.e2e.conftest import Atelier, finished, job_id_of, pixels, rows

pytestmark = pytest.mark.e2e


def record_calls(atelier: Atelier, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The prompts of the images in each pipeline call the worker makes."""
    assert atelier.bot is not None and atelier.bot.executor.worker is not None
    worker = atelier.bot.executor.worker
    real_call = worker._call
    calls: list[list[str]] = []

    def call(loaded: Any, slots: list[Any], *rest: Any) -> Any:
        calls.append([request.prompt for request, _ in slots])
        return real_call(loaded, slots, *rest)

    monkeypatch.setattr(worker, "_call", call)
    return calls


async def test_compatible_jobs_share_a_call_and_keep_their_pictures(
        atelier: Atelier, monkeypatch: pytest.MonkeyPatch) -> None:
    double = atelier.double
    alone = [await finished(await atelier.imagine(f"a fox number {i} --seed {i} --n 2"))
             for i in (1, 2)]
    calls = record_calls(atelier, monkeypatch)
    blocker = await atelier.imagine("a slow one", steps=150)
    together = [await atelier.imagine(f"a fox number {i} --seed {i} --n 2", user=user)
                for i, user in ((1, double.bob), (2, double.mod))]
    results = await asyncio.gather(*(finished(h, 60) for h in together), finished(blocker, 60))
    assert ["a fox number 1", "a fox number 1", "a fox number 2", "a fox number 2"] in calls
    for before, after in zip(alone, results, strict=False):
        # the same pictures as when each ran alone (within batch-shape rounding, SPEC §5)
        assert abs(pixels(before.attachment_bytes()) - pixels(after.attachment_bytes())).max() <= 2


async def test_users_take_turns(atelier: Atelier, monkeypatch: pytest.MonkeyPatch) -> None:
    double = atelier.double
    await atelier.restart(max_queue_per_user=10)
    calls = record_calls(atelier, monkeypatch)
    # alice queues three different jobs, then bob one: bob does not wait for all of alice's
    handles = [await atelier.imagine(f"alice {i}", count=1, steps=40 + i) for i in range(3)]
    handles.append(await atelier.imagine("bob", count=1, steps=50, user=double.bob))
    await asyncio.gather(*(finished(h, 60) for h in handles))
    order = [prompts[0] for prompts in calls]
    assert order.index("bob") < order.index("alice 2"), order


async def test_cancel_one_job_inside_a_batch(atelier: Atelier) -> None:
    double = atelier.double
    blocker = await atelier.imagine("a slow one", steps=150)
    keep = await atelier.imagine("keep me --steps 100", user=double.bob)
    drop = await atelier.imagine("drop me --steps 100", user=double.mod)
    dropped = await drop.original()
    await dropped.wait_until(lambda m: "\nstep" in m.content, 60)  # running, with `keep`
    job_id = rows(atelier, "SELECT id FROM jobs WHERE prompt = 'drop me'")[0][0]
    await double.click(dropped, f"atelier:c:{job_id}", user=double.mod)
    await dropped.wait_until(lambda m: m.content.endswith("\nCancelled"), 10)
    kept = await finished(keep, 60)
    assert kept.attachments and "job `" in kept.content
    await finished(blocker, 60)
    statuses = dict(rows(atelier, "SELECT prompt, status FROM jobs"))
    assert statuses == {"a slow one": "done", "keep me": "done", "drop me": "cancelled"}
    assert rows(atelier, "SELECT count(*) FROM images WHERE job_id = ?", job_id)[0][0] == 0
    assert job_id_of(kept) != job_id
