"""The executor: one worker thread that owns the pipelines, fed from the event loop.

`submit` returns a future resolved on the loop with `loop.call_soon_threadsafe`; progress reaches
the loop the same way. Pipelines and their CUDA state never leave the worker thread."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot.engine.scheduler import FairQueue
from bot.engine.types import (
    EngineError,
    GenerationRequest,
    GenerationResult,
    JobCancelled,
    Progress,
)
from bot.engine.worker import StepReport, Worker

log = logging.getLogger(__name__)

ProgressCallback = Callable[[Progress], None]


class ExecutorClosed(Exception):
    """The executor stopped before the job ran; the job stays queued for the next start."""


def _settle(future: asyncio.Future[Any], result: Any = None,
            error: BaseException | None = None) -> None:
    """Resolve `future` unless it already is (a cancelled job's future is settled early).
    Runs on the event loop."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


@dataclass
class _Job:
    request: GenerationRequest
    future: asyncio.Future[GenerationResult]
    on_progress: ProgressCallback | None
    position: int = 0


@dataclass(frozen=True)
class ExecutorStats:
    queued: int
    running: int
    seconds_per_image: float | None  # recent average, pipeline time only
    jobs_done: int


class LocalExecutor:
    """Runs requests on a `Worker` in one background thread, fair and batched."""

    def __init__(self, worker_factory: Callable[[], Worker], max_batch: int,
                 warm_up: GenerationRequest | None = None) -> None:
        self._worker_factory = worker_factory
        self._max_batch = max_batch
        self._warm_up = warm_up
        self._queue = FairQueue()
        self._jobs: dict[str, _Job] = {}
        self._running: set[str] = set()
        self._cancelled: set[str] = set()
        self._condition = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Future[None] | None = None
        self._recent: deque[tuple[int, float]] = deque(maxlen=20)  # (images, seconds)
        self.jobs_done = 0
        self.worker: Worker | None = None
        self._startup_error: Exception | None = None

    # ---- loop side --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the thread, which loads the default model; jobs may be submitted at once."""
        self._loop = asyncio.get_running_loop()
        self._ready = self._loop.create_future()
        self._thread = threading.Thread(target=self._run, name="atelier-gpu", daemon=True)
        self._thread.start()

    async def ready(self) -> None:
        """Wait until the worker has loaded and warmed up its default model (or failed to)."""
        assert self._ready is not None, "the executor is not started"
        await asyncio.shield(self._ready)

    def submit(self, request: GenerationRequest,
               on_progress: ProgressCallback | None = None,
               front: bool = False) -> asyncio.Future[GenerationResult]:
        """Queue a request; the future gets its result, `JobCancelled` or an `EngineError`."""
        if self._loop is None:
            raise RuntimeError("the executor is not started")
        future: asyncio.Future[GenerationResult] = self._loop.create_future()
        with self._condition:
            if self._closing:
                future.set_exception(ExecutorClosed())
                return future
            if request.job_id in self._jobs:
                raise ValueError(f"job {request.job_id} is already queued")
            self._jobs[request.job_id] = _Job(request, future, on_progress)
            self._queue.push(request, front=front)
            self._post_positions()
            self._condition.notify()
        return future

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued or running job; False if it is not here (finished or unknown)."""
        with self._condition:
            job = self._jobs.get(job_id)
            if job is None:
                return False
            if self._queue.remove(job_id) is not None:
                del self._jobs[job_id]
                self._post_positions()
            else:
                # Running: the worker drops its images, and stops the pipeline within a step
                # when every job in the call is cancelled.
                self._cancelled.add(job_id)
        _settle(job.future, error=JobCancelled())
        return True

    def position(self, job_id: str) -> int | None:
        with self._condition:
            return self._queue.positions().get(job_id)

    def stats(self) -> ExecutorStats:
        with self._condition:
            images = sum(n for n, _ in self._recent)
            seconds = sum(s for _, s in self._recent)
            return ExecutorStats(
                queued=len(self._queue),
                running=len(self._running),
                seconds_per_image=seconds / images if images else None,
                jobs_done=self.jobs_done,
            )

    def queued_jobs(self) -> list[tuple[GenerationRequest, int]]:
        """Waiting requests with their positions, in serving order."""
        with self._condition:
            return [(request, place) for place, request in enumerate(self._queue, start=1)]

    async def close(self) -> None:
        """Stop taking work, let the running batch finish, and fail the rest with ExecutorClosed."""
        with self._condition:
            self._closing = True
            waiting = [self._jobs.pop(r.job_id) for r in list(self._queue)]
            self._queue = FairQueue()
            self._condition.notify_all()
        for job in waiting:
            _settle(job.future, error=ExecutorClosed())
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)

    # ---- thread side ------------------------------------------------------------------------

    def _call_soon(self, callback: Callable[..., Any], *args: Any) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    def _post_positions(self) -> None:
        """Tell each queued job whose place changed where it now stands. Called with the lock."""
        for place, request in enumerate(self._queue, start=1):
            job = self._jobs[request.job_id]
            if job.position != place and job.on_progress is not None:
                job.position = place
                self._call_soon(job.on_progress, Progress(request.job_id, "queued", position=place))

    def _report(self, report: StepReport) -> None:
        for job_id in report.job_ids:
            job = self._jobs.get(job_id)
            if job is None or job.on_progress is None or job_id in self._cancelled:
                continue
            progress = Progress(job_id, "running", step=report.step, total=report.total,
                                preview=report.previews.get(job_id))
            self._call_soon(job.on_progress, progress)

    def _start_worker(self) -> None:
        try:
            worker = self._worker_factory()
            if self._warm_up is not None:
                started = time.perf_counter()
                outcome = worker.run([self._warm_up])[self._warm_up.job_id]
                if isinstance(outcome, BaseException):
                    raise outcome
                log.info("engine warmed up in %.1f s", time.perf_counter() - started)
        except Exception as error:
            log.exception("the image engine could not start")
            self._startup_error = error
            self._call_soon(_settle, self._ready, None, EngineError(str(error)))
            return
        self.worker = worker
        self._call_soon(_settle, self._ready)

    def _run(self) -> None:
        self._start_worker()

        while True:
            with self._condition:
                while not self._queue and not self._closing:
                    self._condition.wait()
                if self._closing:
                    return
                batch = self._queue.pop_batch(self._max_batch)
                self._running = {request.job_id for request in batch}
                self._post_positions()
            for request in batch:
                self._report(StepReport((request.job_id,), 0, request.denoising_steps))
            started = time.perf_counter()
            try:
                if self.worker is None:
                    raise EngineError(f"The image engine could not start: {self._startup_error}")
                outcomes = self.worker.run(batch, self._report, self._cancelled.__contains__)
            except EngineError as error:
                outcomes = {r.job_id: error for r in batch}
            except Exception as error:  # the worker failed as a whole; its thread lives on
                log.exception("a batch of %d jobs failed", len(batch))
                outcomes = {r.job_id: EngineError(f"The engine failed: {error}") for r in batch}
            elapsed = time.perf_counter() - started
            with self._condition:
                images = sum(r.count for r in batch if r.job_id not in self._cancelled)
                if images:
                    self._recent.append((images, elapsed))
                for request in batch:
                    job = self._jobs.pop(request.job_id)
                    self._cancelled.discard(request.job_id)
                    outcome = outcomes.get(request.job_id, JobCancelled())
                    if isinstance(outcome, BaseException):
                        self._call_soon(_settle, job.future, None, outcome)
                    else:
                        self.jobs_done += 1
                        self._call_soon(_settle, job.future, outcome)
                self._running = set()
