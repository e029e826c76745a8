"""`LocalExecutor` with the tiny worker: results, queue progress, cancel, close, fairness."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
from PIL import Image

from bot.engine.executor import ExecutorClosed, LocalExecutor
from bot.engine.types import EngineError, GenerationResult, JobCancelled, Mode, Progress
from bot.engine.worker import Worker
from tests.engine.helpers import make_request

TIMEOUT = 60  # generous: a stuck executor fails the test instead of hanging the suite


class Gate:
    """A worker factory that waits until opened: jobs pile up before any of them runs."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.event = threading.Event()

    def __call__(self) -> Worker:
        if not self.event.wait(TIMEOUT):
            raise RuntimeError("the gate was never opened")
        return self.worker

    def open(self) -> None:
        self.event.set()


class Recorder:
    """Collects the `Progress` of every job."""

    def __init__(self) -> None:
        self.events: list[tuple[float, Progress]] = []

    def __call__(self, progress: Progress) -> None:
        self.events.append((time.perf_counter(), progress))

    def of(self, job_id: str, state: str | None = None) -> list[Progress]:
        return [p for _, p in self.events
                if p.job_id == job_id and (state is None or p.state == state)]


@pytest_asyncio.fixture
async def start_executor(
    tiny_worker: Worker,
) -> AsyncIterator[Callable[..., LocalExecutor]]:
    started: list[LocalExecutor] = []

    def start(factory: Callable[[], Worker] | None = None, max_batch: int = 8) -> LocalExecutor:
        executor = LocalExecutor(factory or (lambda: tiny_worker), max_batch=max_batch)
        executor.start()
        started.append(executor)
        return executor

    yield start
    for executor in started:
        factory = executor._slot.factory
        if isinstance(factory, Gate):
            factory.open()  # a test that failed before opening its gate must not hang here
        if isinstance(executor.worker, HoldFirstCall):
            executor.worker.release.set()
        await asyncio.wait_for(executor.close(), TIMEOUT)


async def _wait(future: asyncio.Future[GenerationResult]) -> GenerationResult:
    return await asyncio.wait_for(future, TIMEOUT)


async def _callbacks_run() -> None:
    """Let the loop run what the executor handed it with `call_soon_threadsafe`."""
    for _ in range(3):
        await asyncio.sleep(0)


async def test_submit_gives_a_result(start_executor: Callable[..., LocalExecutor]) -> None:
    executor = start_executor()
    await asyncio.wait_for(executor.ready(), TIMEOUT)
    recorder = Recorder()
    result = await _wait(executor.submit(make_request("job", seeds=(1, 2, 3, 4)), recorder))
    assert result.job_id == "job"
    assert [image.seed for image in result.images] == [1, 2, 3, 4]
    running = recorder.of("job", "running")
    assert running[0].step == 0 and running[0].total == 4
    assert [p.step for p in running] == [0, 1, 2, 3, 4]
    assert any(p.preview for p in running)
    stats = executor.stats()
    assert stats.jobs_done == 1 and stats.queued == 0 and stats.running == 0
    assert stats.seconds_per_image is not None and stats.seconds_per_image > 0
    assert executor.cancel("job") is False  # finished: nothing to cancel


async def test_img2img_progress_keeps_one_total(
    start_executor: Callable[..., LocalExecutor],
) -> None:
    executor = start_executor()
    start = io.BytesIO()
    Image.new("RGB", (128, 128), (200, 30, 30)).save(start, format="PNG")
    recorder = Recorder()
    await _wait(executor.submit(
        make_request("job", steps=10, mode=Mode.IMG2IMG, init_image=start.getvalue(),
                     strength=0.5), recorder))
    running = recorder.of("job", "running")
    assert running[-1].step == running[-1].total  # it ran to the end
    assert {p.total for p in running} == {running[-1].total}


async def test_duplicate_job_id_is_refused(tiny_worker: Worker,
                                           start_executor: Callable[..., LocalExecutor]) -> None:
    gate = Gate(tiny_worker)
    executor = start_executor(gate)
    first = executor.submit(make_request("job"))
    with pytest.raises(ValueError, match="job"):
        executor.submit(make_request("job"))
    gate.open()
    await _wait(first)


async def test_queued_jobs_get_their_positions(
    tiny_worker: Worker, start_executor: Callable[..., LocalExecutor],
) -> None:
    gate = Gate(tiny_worker)
    executor = start_executor(gate)
    recorder = Recorder()
    # different step counts: no two of these share a pipeline call
    futures = [executor.submit(make_request(job_id, user_key=user, steps=steps), recorder)
               for job_id, user, steps in [("a0", "alice", 2), ("a1", "alice", 3),
                                           ("b0", "bob", 4)]]
    await _callbacks_run()
    assert [p.position for p in recorder.of("a0")] == [1]
    assert [p.position for p in recorder.of("a1")] == [2, 3]  # bob's job went ahead
    assert [p.position for p in recorder.of("b0")] == [2]
    assert executor.position("a1") == 3
    assert [(r.job_id, place) for r, place in executor.queued_jobs()] == [
        ("a0", 1), ("b0", 2), ("a1", 3)]
    gate.open()
    for future in futures:
        await _wait(future)
    # as the jobs ahead ran, the waiting ones moved up, then ran
    assert [p.position for p in recorder.of("a1", "queued")] == [2, 3, 2, 1]
    assert [p.position for p in recorder.of("b0", "queued")] == [2, 1]
    for job_id in ("a0", "a1", "b0"):
        states = [p.state for p in recorder.of(job_id)]
        assert states.index("running") == len(recorder.of(job_id, "queued"))  # queued, then running
    assert executor.position("a1") is None


async def test_cancel_a_queued_job(tiny_worker: Worker,
                                   start_executor: Callable[..., LocalExecutor]) -> None:
    gate = Gate(tiny_worker)
    executor = start_executor(gate)
    recorder = Recorder()
    first = executor.submit(make_request("first", steps=2), recorder)
    waiting = executor.submit(make_request("waiting", steps=3), recorder)
    assert executor.cancel("waiting") is True
    assert waiting.done()  # at once, before the worker even started
    with pytest.raises(JobCancelled):
        waiting.result()
    assert executor.cancel("waiting") is False
    assert executor.cancel("unknown") is False
    assert executor.position("waiting") is None
    gate.open()
    await _wait(first)
    assert recorder.of("waiting", "running") == []  # it never ran
    assert executor.stats().jobs_done == 1


async def test_cancel_a_running_job_stops_within_a_step(
    start_executor: Callable[..., LocalExecutor],
) -> None:
    executor = start_executor()
    await asyncio.wait_for(executor.ready(), TIMEOUT)
    recorder = Recorder()
    long_job = executor.submit(make_request("long", seeds=(1, 2, 3, 4), steps=150), recorder)
    while len(recorder.of("long", "running")) < 6:  # steps 0..5 reported
        await asyncio.sleep(0.005)
    running = [t for t, p in recorder.events if p.job_id == "long" and p.step >= 1]
    per_step = (running[-1] - running[0]) / (len(running) - 1)
    cancelled_at = time.perf_counter()
    assert executor.cancel("long") is True
    assert long_job.done()
    with pytest.raises(JobCancelled):
        long_job.result()
    await _callbacks_run()
    reported = len(recorder.of("long"))
    # the worker is free again long before the 145 steps left would have run
    follow_up = await _wait(executor.submit(make_request("next", steps=1)))
    waited = time.perf_counter() - cancelled_at
    assert follow_up.job_id == "next"
    assert waited < 0.25 * per_step * 145, (waited, per_step)
    assert len(recorder.of("long")) == reported  # no progress after the cancel
    assert executor.stats().jobs_done == 1


async def test_close_fails_waiting_jobs(tiny_worker: Worker,
                                        start_executor: Callable[..., LocalExecutor]) -> None:
    gate = Gate(tiny_worker)
    executor = start_executor(gate)
    futures = [executor.submit(make_request(f"job{i}", user_key=f"user{i}")) for i in range(3)]
    closing = asyncio.create_task(executor.close())
    await asyncio.sleep(0)  # close() settles waiting jobs before it waits for the thread
    for future in futures:
        assert future.done()
        with pytest.raises(ExecutorClosed):
            future.result()
    gate.open()
    await asyncio.wait_for(closing, TIMEOUT)
    late = executor.submit(make_request("late"))
    with pytest.raises(ExecutorClosed):
        await _wait(late)


async def test_close_lets_the_running_job_finish(
    start_executor: Callable[..., LocalExecutor],
) -> None:
    executor = start_executor()
    await asyncio.wait_for(executor.ready(), TIMEOUT)
    recorder = Recorder()
    running = executor.submit(make_request("running", steps=20), recorder)
    waiting = executor.submit(make_request("waiting", steps=3))
    while not recorder.of("running", "running"):
        await asyncio.sleep(0.005)
    await asyncio.wait_for(executor.close(), TIMEOUT)
    assert (await _wait(running)).job_id == "running"
    with pytest.raises(ExecutorClosed):
        await _wait(waiting)


async def test_unknown_model_fails_only_that_job(
    start_executor: Callable[..., LocalExecutor],
) -> None:
    executor = start_executor()
    bad = executor.submit(make_request("bad", model="nope"))
    good = executor.submit(make_request("good", user_key="other"))
    with pytest.raises(EngineError, match="nope"):
        await _wait(bad)
    assert (await _wait(good)).job_id == "good"
    later = await _wait(executor.submit(make_request("later")))
    assert later.job_id == "later"


async def test_a_worker_that_cannot_start(start_executor: Callable[..., LocalExecutor]) -> None:
    def broken() -> Worker:
        raise OSError("no such model folder")

    executor = start_executor(broken)
    with pytest.raises(EngineError, match="no such model folder"):
        await asyncio.wait_for(executor.ready(), TIMEOUT)
    with pytest.raises(EngineError, match="could not start"):
        await _wait(executor.submit(make_request("job")))


async def test_jobs_of_two_users_interleave(tiny_worker: Worker,
                                            start_executor: Callable[..., LocalExecutor]) -> None:
    gate = Gate(tiny_worker)
    executor = start_executor(gate, max_batch=1)  # one image per call: no merging
    finished: list[str] = []
    futures = []
    for job_id, user in [("a0", "alice"), ("a1", "alice"), ("a2", "alice"), ("a3", "alice"),
                         ("b0", "bob"), ("b1", "bob")]:
        future = executor.submit(make_request(job_id, user_key=user, steps=2))
        future.add_done_callback(lambda f, job_id=job_id: finished.append(job_id))
        futures.append(future)
    gate.open()
    await asyncio.wait_for(asyncio.gather(*futures), TIMEOUT)
    assert finished == ["a0", "b0", "a1", "b1", "a2", "a3"]


class HoldFirstCall:
    """The tiny worker, except that its first call waits until released."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.started = threading.Event()
        self.release = threading.Event()

    def start(self, *args: Any, **kwargs: Any) -> Any:
        if not self.started.is_set():
            self.started.set()
            self.release.wait(TIMEOUT)
        return self.worker.start(*args, **kwargs)

    def drain(self) -> None:
        self.worker.drain()


async def test_a_newcomer_does_not_wait_for_a_busy_user(
    tiny_worker: Worker, start_executor: Callable[..., LocalExecutor],
) -> None:
    held = HoldFirstCall(tiny_worker)
    executor = start_executor(lambda: held, max_batch=1)
    finished: list[str] = []
    futures = [executor.submit(make_request(f"a{i}", user_key="alice")) for i in range(3)]
    # alice's first job is running when bob asks for one
    assert await asyncio.to_thread(held.started.wait, TIMEOUT)
    futures.append(executor.submit(make_request("b0", user_key="bob")))
    for future, job_id in zip(futures, ["a0", "a1", "a2", "b0"], strict=True):
        future.add_done_callback(lambda f, job_id=job_id: finished.append(job_id))
    assert executor.position("b0") == 1
    assert executor.position("a1") == 2
    held.release.set()
    await asyncio.wait_for(asyncio.gather(*futures), TIMEOUT)
    assert finished == ["a0", "b0", "a1", "a2"]


async def test_compatible_jobs_share_a_call(tiny_worker: Worker,
                                            start_executor: Callable[..., LocalExecutor]) -> None:
    gate = Gate(tiny_worker)
    executor = start_executor(gate, max_batch=8)
    first = executor.submit(make_request("first", seeds=(1, 2, 3, 4), user_key="alice"))
    second = executor.submit(make_request("second", seeds=(5, 6), user_key="bob"))
    other = executor.submit(make_request("other", seeds=(7,), user_key="carol", steps=3))
    gate.open()
    results = [await _wait(future) for future in (first, second, other)]
    assert [r.batch_images for r in results] == [6, 6, 1]
    assert [len(r.images) for r in results] == [4, 2, 1]


async def test_the_engine_runs_the_next_batch_while_pictures_are_finished(
    start_executor: Callable[..., LocalExecutor], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PNG encoding and the safety check happen on finishing threads: a job whose pictures are
    still being encoded does not hold up the next one on the GPU."""
    gate = threading.Event()
    encode = Worker._encode_job

    def held(self: Worker, request: Any, *rest: Any) -> None:
        if request.job_id == "slow":
            gate.wait(TIMEOUT)
        encode(self, request, *rest)

    monkeypatch.setattr(Worker, "_encode_job", held)
    executor = start_executor(max_batch=1)
    slow = executor.submit(make_request("slow"))
    fast = executor.submit(make_request("fast", user_key="other"))
    try:
        assert (await _wait(fast)).images
        assert not slow.done()  # its PNGs are still being made
    finally:
        gate.set()
    assert (await _wait(slow)).images
