"""The scheduler's side of Ray faults and sharing, with stand-in workers (no Ray needed): lost
batches, workers that do not come back, workers that are slow to start.

`Executor` treats every worker home alike; these slots lose batches the way a killed Ray actor
does (`WorkerLost`), so the queue's answers can be checked quickly and exactly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence

import pytest
import pytest_asyncio

from bot.engine.executor import (
    MAX_ATTEMPTS,
    START_FAILED,
    EngineState,
    Executor,
    ExecutorClosed,
    WorkerDetails,
    WorkerLost,
    WorkerSlot,
)
from bot.engine.types import (
    EngineError,
    GenerationRequest,
    GenerationResult,
    JobCancelled,
    Progress,
)
from bot.engine.worker import Outcome, Reporter
from tests.engine.helpers import make_request

TIMEOUT = 10


class FakeSlot(WorkerSlot):
    """Runs batches instantly; loses the first `lose` of them, then comes back (or not)."""

    def __init__(self, name: str, lose: int = 0, comes_back: bool = True,
                 fail_starts: int = 0) -> None:
        super().__init__(name)
        self.lose = lose
        self.comes_back = comes_back
        self.fail_starts = fail_starts  # the first starts that fail
        self.starts = 0
        self.batches: list[list[str]] = []
        self.cancelled: list[str] = []
        self.hold: asyncio.Event | None = None  # when set up, each batch waits for it

    async def start(self) -> None:
        self.starts += 1
        await asyncio.sleep(0)
        if self.starts <= self.fail_starts:
            raise TimeoutError("node 10.7.0.3 did not come up")
        self.details = WorkerDetails("node", "cpu", "float32", ("tiny",), 1)

    async def run(self, batch: Sequence[GenerationRequest], report: Reporter,
                  cancelled: Callable[[str], bool]) -> dict[str, Outcome]:
        self.batches.append([request.job_id for request in batch])
        if self.hold is not None:
            await self.hold.wait()
        await asyncio.sleep(0)
        if self.lose:
            self.lose -= 1
            raise WorkerLost("process killed")
        return {r.job_id: GenerationResult(r.job_id, r.model, (), 0.01, len(batch))
                for r in batch}

    def cancel(self, job_id: str) -> None:
        self.cancelled.append(job_id)

    async def recover(self) -> bool:
        if not self.comes_back:
            await asyncio.sleep(0)
            return False
        await asyncio.sleep(0.01)
        return True


class FakeExecutor(Executor):
    start_backoff = 0.01

    def __init__(self, slots: list[FakeSlot], max_batch: int = 8,
                 start_timeout: float = 0.0) -> None:
        super().__init__(max_batch, start_timeout)
        self.fake_slots = slots

    async def _open(self) -> list[WorkerSlot]:
        return list(self.fake_slots)


@pytest_asyncio.fixture
async def start() -> AsyncIterator[Callable[..., FakeExecutor]]:
    started: list[FakeExecutor] = []

    def make(*slots: FakeSlot, max_batch: int = 8, start_timeout: float = 0.0) -> FakeExecutor:
        executor = FakeExecutor(list(slots), max_batch, start_timeout)
        executor.start()
        started.append(executor)
        return executor

    yield make
    for executor in started:
        for slot in executor.fake_slots:
            if slot.hold is not None:
                slot.hold.set()
        await asyncio.wait_for(executor.close(), TIMEOUT)


async def test_a_lost_batch_goes_back_to_the_head_of_the_queue(
    start: Callable[..., FakeExecutor],
) -> None:
    slot = FakeSlot("ray-1", lose=1)
    executor = start(slot)
    events: list[Progress] = []
    # steps differ: every job is its own batch
    requests = [make_request(job_id, user_key=user, steps=steps) for job_id, user, steps in
                [("a0", "alice", 2), ("b0", "bob", 3), ("a1", "alice", 4), ("c0", "carol", 5)]]
    futures = [executor.submit(request, events.append) for request in requests]
    await asyncio.wait_for(asyncio.gather(*futures), TIMEOUT)
    # a0 ran again at once, before bob's and carol's turns
    assert slot.batches == [["a0"], ["a0"], ["b0"], ["c0"], ["a1"]]
    a0 = [(p.state, p.position or p.step) for p in events if p.job_id == "a0"]
    assert a0 == [("queued", 1), ("running", 0), ("queued", 1), ("running", 0)]
    assert slot.jobs_done == executor.stats().jobs_done == 4
    assert executor.workers()[0].state == "ready"


async def test_a_job_that_keeps_killing_workers_fails(start: Callable[..., FakeExecutor]) -> None:
    slot = FakeSlot("ray-1", lose=MAX_ATTEMPTS)
    executor = start(slot)
    poison = executor.submit(make_request("poison", steps=2))
    other = executor.submit(make_request("other", user_key="bob", steps=3))
    with pytest.raises(EngineError, match=f"lost {MAX_ATTEMPTS} times"):
        await asyncio.wait_for(poison, TIMEOUT)
    assert (await asyncio.wait_for(other, TIMEOUT)).job_id == "other"
    assert slot.batches == [["poison"]] * MAX_ATTEMPTS + [["other"]]


async def test_the_other_worker_carries_on_while_one_is_lost(
    start: Callable[..., FakeExecutor],
) -> None:
    gone, steady = FakeSlot("ray-1", lose=1, comes_back=False), FakeSlot("ray-2")
    gone.hold = asyncio.Event()
    executor = start(gone, steady)
    await asyncio.wait_for(executor.ready(), TIMEOUT)
    first = executor.submit(make_request("first", steps=2))
    while not gone.batches:
        await asyncio.sleep(0)
    gone.hold.set()
    later = [executor.submit(make_request(f"later{i}", user_key=f"u{i}", steps=3 + i))
             for i in range(3)]
    results = await asyncio.wait_for(asyncio.gather(first, *later), TIMEOUT)
    assert [r.job_id for r in results] == ["first", "later0", "later1", "later2"]
    assert "first" in [job for batch in steady.batches for job in batch]
    assert [w.state for w in executor.workers()] == ["gone", "ready"]


async def test_when_every_worker_is_gone_jobs_fail(start: Callable[..., FakeExecutor]) -> None:
    executor = start(FakeSlot("ray-1", lose=1, comes_back=False))
    lost = executor.submit(make_request("lost"))
    with pytest.raises(EngineError, match="Every image worker is gone"):
        await asyncio.wait_for(lost, TIMEOUT)
    with pytest.raises(EngineError, match="Every image worker is gone"):
        await asyncio.wait_for(executor.submit(make_request("later")), TIMEOUT)


async def test_close_does_not_wait_for_a_worker_that_is_restarting(
    start: Callable[..., FakeExecutor],
) -> None:
    slot = FakeSlot("ray-1", lose=1)
    never = asyncio.Event()

    async def stuck() -> bool:
        await never.wait()
        return True

    slot.recover = stuck  # type: ignore[method-assign]
    executor = start(slot)
    await asyncio.wait_for(executor.ready(), TIMEOUT)
    job = executor.submit(make_request("job"))
    while executor.workers()[0].state != "restarting":
        await asyncio.sleep(0)
    assert executor.position("job") == 1  # back in the queue, waiting for a worker
    await asyncio.wait_for(executor.close(), TIMEOUT)
    with pytest.raises(ExecutorClosed):
        await job


async def test_idle_workers_share_the_waiting_images(start: Callable[..., FakeExecutor]) -> None:
    one, two = FakeSlot("ray-1"), FakeSlot("ray-2")
    executor = start(one, two, max_batch=8)
    await asyncio.wait_for(executor.ready(), TIMEOUT)
    # four compatible one-image jobs: one worker could batch them all, two share them
    futures = [executor.submit(make_request(f"j{i}", user_key=f"u{i}")) for i in range(4)]
    await asyncio.wait_for(asyncio.gather(*futures), TIMEOUT)
    assert sorted(one.batches + two.batches) == [["j0", "j1"], ["j2", "j3"]]


async def test_cancel_reaches_the_worker_running_the_job(
    start: Callable[..., FakeExecutor],
) -> None:
    slot = FakeSlot("ray-1")
    slot.hold = asyncio.Event()
    executor = start(slot)
    job = executor.submit(make_request("job"))
    while not slot.batches:
        await asyncio.sleep(0)
    assert executor.stats().running == 1
    assert executor.cancel("job") is True
    assert slot.cancelled == ["job"]
    slot.hold.set()
    with pytest.raises(JobCancelled):
        await job


async def test_a_worker_that_fails_to_start_is_tried_again_while_jobs_wait(
    start: Callable[..., FakeExecutor],
) -> None:
    slot = FakeSlot("ray-1", fail_starts=2)
    executor = start(slot, start_timeout=60)
    events: list[Progress] = []
    job = executor.submit(make_request("job"), events.append)
    assert executor.engine_state() is EngineState.STARTING
    assert (await asyncio.wait_for(job, TIMEOUT)).job_id == "job"
    assert slot.starts == 3 and executor.workers()[0].state == "ready"
    assert executor.engine_state() is EngineState.READY
    # the job's message said the engine was starting again, then that it no longer was
    assert [(p.state, p.position, p.engine_retrying) for p in events] == [
        ("queued", 1, False), ("queued", 1, True), ("queued", 1, False), ("running", 0, False)]


async def test_jobs_fail_when_no_worker_starts_in_time(
    start: Callable[..., FakeExecutor],
) -> None:
    slot = FakeSlot("ray-1", fail_starts=1000)
    executor = start(slot, start_timeout=0.5)
    job = executor.submit(make_request("job"))
    with pytest.raises(EngineError) as failed:
        await asyncio.wait_for(job, TIMEOUT)
    assert str(failed.value) == START_FAILED  # the host is for the log, not for users
    assert slot.starts >= 2  # tried again before giving up
    with pytest.raises(EngineError, match="10.7.0.3"):  # what operators see
        await asyncio.wait_for(executor.ready(), TIMEOUT)
    assert executor.engine_state() is EngineState.UNABLE
    assert executor.workers()[0].state == "failed"
    with pytest.raises(EngineError, match="could not start"):
        await asyncio.wait_for(executor.submit(make_request("later")), TIMEOUT)


async def test_one_worker_serves_while_another_retries_its_start(
    start: Callable[..., FakeExecutor],
) -> None:
    slow, steady = FakeSlot("ray-1", fail_starts=1000), FakeSlot("ray-2")
    executor = start(slow, steady, start_timeout=60)
    result = await asyncio.wait_for(executor.submit(make_request("job")), TIMEOUT)
    assert result.job_id == "job" and steady.batches == [["job"]]
    assert executor.engine_state() is EngineState.READY
    assert [w.state for w in executor.workers()] == ["retrying", "ready"]


async def test_close_stops_retrying_and_keeps_the_job_for_the_next_start(
    start: Callable[..., FakeExecutor],
) -> None:
    slot = FakeSlot("ray-1", fail_starts=1000)
    executor = start(slot, start_timeout=600)
    job = executor.submit(make_request("job"))
    while slot.starts < 2:
        await asyncio.sleep(0.01)
    assert executor.engine_state() is EngineState.RETRYING
    await asyncio.wait_for(executor.close(), TIMEOUT)
    with pytest.raises(ExecutorClosed):
        await job
    assert executor.workers()[0].state == "stopped"
    with pytest.raises(ExecutorClosed):
        await executor.ready()
