"""The executor: one fair, batching queue on the event loop, feeding workers in a thread or on Ray.

`Executor` is the scheduler, the same whatever runs the pictures: fairness and batching
(`FairQueue`), futures, progress fan-out, cancel, positions and stats all live here, on the event
loop. What differs is the home of its workers (`WorkerSlot`): `LocalExecutor` runs one `Worker`
on a thread of this process; `bot.engine.ray_executor.RayExecutor` runs one per Ray actor. Each
slot serves one batch at a time; an idle slot takes the next batch from the queue.

Every method is called on the event loop. Pipelines and their CUDA state never leave the thread
their worker was built on."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import math
import queue
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, overload

from bot.engine.loading import Loading
from bot.engine.scheduler import FairQueue
from bot.engine.types import (
    CaptionRequest,
    CaptionResult,
    EngineError,
    GenerationRequest,
    GenerationResult,
    JobCancelled,
    Progress,
    Work,
    WorkResult,
)
from bot.engine.worker import DeviceFault, Finishing, Outcome, Reporter, StepReport, Worker

log = logging.getLogger(__name__)

ProgressCallback = Callable[[Progress], None]
Finished = asyncio.Future[WorkResult]  # a job whose pictures are being finished

# A job whose worker dies this many times is failed rather than retried: a request that crashes
# the process (a driver bug, memory) must not take down every worker in turn.
MAX_ATTEMPTS = 3
# A worker that fails to start is tried again after 2, 4, 8… seconds, at most this far apart.
START_BACKOFF_MAX = 60.0

# What jobs fail with; the detail (hosts, paths, Ray's words) goes to the log, not to users.
START_FAILED = "The image engine could not start; an admin can find why in the bot's log"
BATCH_FAILED = "The image engine failed on this job"


class EngineState(StrEnum):
    """The engine as a whole, as `/info` and waiting jobs tell it."""

    STARTING = "starting"  # no worker has started yet
    RETRYING = "retrying"  # no worker has started yet, and a start failed: trying again
    READY = "ready"  # a worker started
    UNABLE = "unable"  # no worker can run jobs: they fail at once


class ExecutorClosed(Exception):
    """The executor stopped before the job ran; the job stays queued for the next start."""


class WorkerLost(Exception):
    """The worker's process or machine went away during a batch; the batch can run elsewhere.
    A job runs into this at most `attempts` times before it fails."""

    def __init__(self, message: str = "", attempts: int = MAX_ATTEMPTS) -> None:
        super().__init__(message)
        self.attempts = attempts


# A job whose batch broke the GPU (a CUDA error that leaves the worker unusable) runs once more,
# on a worker built again; if it breaks that one too, it fails.
FAULT_ATTEMPTS = 2


def _settle(future: asyncio.Future[Any], result: Any = None,
            error: BaseException | None = None) -> None:
    """Resolve `future` unless it already is (a cancelled job's future is settled early)."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


@dataclass
class _Job:
    request: Work
    future: asyncio.Future[Any]  # a `GenerationResult`, or a `CaptionResult`
    on_progress: ProgressCallback | None
    position: int = 0
    engine_retrying: bool = False  # as last told to `on_progress`, with `position`
    attempts: int = 0  # batches of this job whose worker was lost


@dataclass(frozen=True)
class ExecutorStats:
    queued: int
    running: int
    seconds_per_image: float | None  # recent average, pipeline time only
    jobs_done: int


@dataclass(frozen=True)
class WorkerInfo:
    """One worker as `/info` shows it."""

    name: str
    node: str  # host name of the machine it runs on
    device: str  # "" until it has started
    dtype: str
    models: tuple[str, ...]  # on its device, or `name (in RAM)`; most recently used last
    jobs_done: int
    state: str  # starting, retrying, ready, busy, restarting, failed, gone or stopped
    pid: int | None = None  # of the process it runs in, as last reported
    loading: str = ""  # "loading model (42 %)" while it loads one

    @property
    def alive(self) -> bool:
        return self.state in ("ready", "busy")


@dataclass(frozen=True)
class WorkerDetails:
    """What a worker says about itself; plain data, so it can come back from another machine."""

    node: str
    device: str
    dtype: str
    models: tuple[str, ...]
    pid: int


def describe_worker(worker: Any) -> WorkerDetails:
    """Where `worker` runs and what it holds; read on any thread (plain attribute reads)."""
    import os

    # getattr throughout: tests stand in for the worker with lighter objects.
    device = str(getattr(worker, "device", ""))
    models = []
    for entry in getattr(worker, "loaded_models", list)():
        name, _, where = entry.partition("@")
        models.append(name if where == device else f"{name} (in RAM)")
    return WorkerDetails(node=socket.gethostname(), device=device,
                         dtype=str(getattr(worker, "dtype", "")).removeprefix("torch."),
                         models=tuple(models), pid=os.getpid())


class EngineThread:
    """One daemon thread that runs the calls given to it in order, so pipelines stay on it.

    Daemon, like the executor thread always was: a pipeline stuck in a driver call must not keep
    the process from exiting."""

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[
            tuple[Callable[..., Any], tuple[Any, ...], concurrent.futures.Future[Any]] | None
        ] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def call(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        """Run `fn(*args)` on this thread after the calls given before; its future."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._calls.put((fn, args, future))
        return future

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            fn, args, future = call
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as error:  # handed to whoever waits for the call
                future.set_exception(error)

    def stop(self) -> None:
        """Stop after the calls already given."""
        self._calls.put(None)

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)


class WorkerSlot:
    """A place where batches run: a thread here, or an actor on some machine of a Ray cluster."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.state = "starting"
        self.jobs_done = 0
        self.details: WorkerDetails | None = None
        self.loading: Loading | None = None  # a model being loaded, on the event loop's word
        # told of each change of `loading`, on the event loop
        self.on_loading: Callable[[WorkerSlot, Loading | None], None] | None = None

    async def start(self) -> None:
        """Build the worker and warm it up; raises if it cannot."""
        raise NotImplementedError

    async def run(self, batch: Sequence[Work], report: Reporter,
                  cancelled: Callable[[str], bool]) -> dict[str, Outcome | Finished]:
        """Run one batch. `report` is called on the event loop. Raises `WorkerLost` when the
        worker went away; then the batch has produced nothing. A job's outcome may still be
        on its way (a future): the slot is free for the next batch meanwhile."""
        raise NotImplementedError

    def cancel(self, job_id: str) -> None:
        """Tell the worker a job of its running batch was cancelled (it also polls `cancelled`)."""

    async def recover(self) -> bool:
        """Wait until a lost worker is back; False when it never will be."""
        return False

    async def stop(self) -> None:
        """Release the worker for good."""

    def info(self) -> WorkerInfo:
        details = self.details
        return WorkerInfo(
            name=self.name,
            node=details.node if details else "",
            device=details.device if details else "",
            dtype=details.dtype if details else "",
            models=details.models if details else (),
            jobs_done=self.jobs_done,
            state=self.state,
            pid=details.pid if details else None,
            loading=self.loading.text if self.loading is not None else "",
        )

    def _loading_changed(self, loading: Loading | None) -> None:
        self.loading = loading
        if self.on_loading is not None:
            self.on_loading(self, loading)


class Executor:
    """Fair, batched scheduling of requests onto the workers that `_open` provides.

    Workers that fail to start are tried again with backoff for `start_timeout` seconds from
    `start()` (a Ray node that is slow to come up, a model file briefly unreadable); jobs wait
    in the queue meanwhile. Only when no worker has started by then do they fail."""

    start_backoff = 2.0  # seconds before the second try at starting, doubling after

    def __init__(self, max_batch: int, start_timeout: float = 0.0) -> None:
        self._max_batch = max_batch
        self._start_timeout = start_timeout
        self._start_deadline = 0.0  # on the loop's clock
        self._retrying = False  # a start failed and is being tried again
        self._queue = FairQueue()
        self._jobs: dict[str, _Job] = {}
        self._running: dict[str, WorkerSlot] = {}  # job id → the slot running it
        self._cancelled: set[str] = set()  # running jobs cancelled; read by worker threads too
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Future[None] | None = None
        self._work = asyncio.Event()  # set when jobs were queued or the executor is closing
        self._closed = asyncio.Event()
        self._idle = 0  # slots waiting for work
        self._slots: list[WorkerSlot] = []
        self._main: asyncio.Task[None] | None = None
        self._started = 0  # slots whose worker started
        self._settled = 0  # slots whose worker started or failed to
        self._start_errors: list[BaseException] = []
        self._unable: EngineError | None = None  # set when no worker can run jobs any more
        self._recent: deque[tuple[int, float]] = deque(maxlen=20)  # (images, seconds)
        self.jobs_done = 0

    # ---- for subclasses: where the workers live --------------------------------------------

    async def _open(self) -> list[WorkerSlot]:
        """The worker slots, not yet started."""
        raise NotImplementedError

    async def _shut(self) -> None:
        """Release what `_open` acquired, once every slot has stopped serving."""
        for slot in self._slots:
            await slot.stop()

    # ---- public API, on the event loop -----------------------------------------------------

    def start(self) -> None:
        """Start the workers in the background; jobs may be submitted at once."""
        self._loop = asyncio.get_running_loop()
        self._start_deadline = self._loop.time() + self._start_timeout
        self._ready = self._loop.create_future()
        self._main = self._loop.create_task(self._serve_all(), name="atelier-executor")

    async def ready(self) -> None:
        """Wait until every worker has started and warmed up (or given up trying); raises
        `EngineError` when none could, `ExecutorClosed` when closed before any did."""
        assert self._ready is not None, "the executor is not started"
        await asyncio.shield(self._ready)

    @overload
    def submit(self, request: GenerationRequest, on_progress: ProgressCallback | None = None,
               front: bool = False) -> asyncio.Future[GenerationResult]: ...

    @overload
    def submit(self, request: CaptionRequest, on_progress: ProgressCallback | None = None,
               front: bool = False) -> asyncio.Future[CaptionResult]: ...

    def submit(self, request: Work,
               on_progress: ProgressCallback | None = None,
               front: bool = False) -> asyncio.Future[Any]:
        """Queue a request; the future gets its result, `JobCancelled` or an `EngineError`."""
        if self._loop is None:
            raise RuntimeError("the executor is not started")
        future: asyncio.Future[Any] = self._loop.create_future()
        if self._closing:
            future.set_exception(ExecutorClosed())
            return future
        if self._unable is not None:
            future.set_exception(self._unable)
            return future
        if request.job_id in self._jobs:
            raise ValueError(f"job {request.job_id} is already queued")
        self._jobs[request.job_id] = _Job(request, future, on_progress)
        self._queue.push(request, front=front)
        self._post_positions()
        self._work.set()
        return future

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued or running job; False if it is not here (finished or unknown)."""
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
            slot = self._running.get(job_id)
            if slot is not None:
                slot.cancel(job_id)
        _settle(job.future, error=JobCancelled())
        return True

    def position(self, job_id: str) -> int | None:
        return self._queue.positions().get(job_id)

    def stats(self) -> ExecutorStats:
        images = sum(n for n, _ in self._recent)
        seconds = sum(s for _, s in self._recent)
        return ExecutorStats(
            queued=len(self._queue),
            running=len(self._running),
            seconds_per_image=seconds / images if images else None,
            jobs_done=self.jobs_done,
        )

    def queued_jobs(self) -> list[tuple[Work, int]]:
        """Waiting requests with their positions, in serving order."""
        return [(request, place) for place, request in enumerate(self._queue, start=1)]

    def workers(self) -> list[WorkerInfo]:
        """Every worker and what it is doing (an empty list while they are being found)."""
        return [slot.info() for slot in self._slots]

    def engine_state(self) -> EngineState:
        if self._unable is not None:
            return EngineState.UNABLE
        if self._started:
            return EngineState.READY
        return EngineState.RETRYING if self._retrying else EngineState.STARTING

    async def close(self) -> None:
        """Stop taking work, let the running batches finish, and fail the rest with
        ExecutorClosed (they stay queued in the database for the next start)."""
        if self._loop is None:
            return
        self._closing = True
        waiting = [self._jobs.pop(r.job_id) for r in list(self._queue)]
        self._queue = FairQueue()
        self._work.set()
        self._closed.set()
        for job in waiting:
            _settle(job.future, error=ExecutorClosed())
        if self._main is not None:
            await asyncio.shield(self._main)

    # ---- serving ----------------------------------------------------------------------------

    async def _serve_all(self) -> None:
        try:
            slots = await self._open_retrying()
            if slots is None:
                return
            self._slots = slots
            if not self._slots:
                empty = EngineError("The image engine has no workers")
                self._give_up(empty)
                self._fail_ready(empty)
            await asyncio.gather(*(self._serve(slot) for slot in self._slots))
        finally:
            await self._shut()
            for slot in self._slots:
                if slot.state not in ("failed", "gone"):
                    slot.state = "stopped"
            if self._ready is not None and not self._ready.done():
                self._ready.set_exception(ExecutorClosed())  # closed before any worker started
                self._ready.exception()  # nobody need be waiting for it

    async def _open_retrying(self) -> list[WorkerSlot] | None:
        """`_open`, tried again with backoff while the start timeout allows; None when it
        never worked (then jobs fail) or the executor closed meanwhile."""
        delay = self.start_backoff
        while True:
            try:
                return await self._open()
            except Exception as error:
                log.exception("the image engine could not start")
                if await self._pause_before_retry(delay):
                    delay = min(2 * delay, START_BACKOFF_MAX)
                    continue
                if not self._closing:
                    self._give_up(EngineError(START_FAILED))
                    self._fail_ready(error)
                return None

    async def _serve(self, slot: WorkerSlot) -> None:
        started = await self._start(slot)
        self._settled += 1
        if self._settled == len(self._slots):
            if self._started:
                if self._ready is not None and not self._ready.done():
                    self._ready.set_result(None)
            elif not self._closing:
                self._give_up(EngineError(START_FAILED))
                self._fail_ready(self._start_errors[0])
        if not started:
            return
        while (batch := await self._next_batch()) is not None:
            slot.state = "busy"
            lost = await self._run_batch(slot, batch)
            if lost and not await self._recover(slot):
                return
            slot.state = "ready"

    async def _start(self, slot: WorkerSlot) -> bool:
        """Start `slot`'s worker, trying again with backoff while the start timeout allows;
        False when it never started (or the executor closed meanwhile)."""
        delay = self.start_backoff
        while True:
            try:
                await slot.start()
            except Exception as error:
                log.exception("worker %s could not start", slot.name)
                slot.state = "retrying"
                if await self._pause_before_retry(delay):
                    delay = min(2 * delay, START_BACKOFF_MAX)
                    continue
                if not self._closing:
                    slot.state = "failed"
                    self._start_errors.append(error)
                return False
            slot.state = "ready"
            self._started += 1
            self._post_positions()  # waiting jobs no longer say the engine is starting
            return True

    async def _pause_before_retry(self, delay: float) -> bool:
        """Wait `delay` seconds (less if the start timeout ends sooner) before another try at
        starting; False when no try is left: the timeout has passed or the executor is closing."""
        assert self._loop is not None
        left = self._start_deadline - self._loop.time()
        if left <= 0 or self._closing:
            return False
        if not self._retrying:
            self._retrying = True
            self._post_positions()  # waiting jobs say that the engine is trying again
        log.info("trying to start the image engine again in %.0f s", min(delay, left))
        try:
            await asyncio.wait_for(self._closed.wait(), min(delay, left))
        except TimeoutError:
            return True
        return False

    def _fail_ready(self, error: BaseException) -> None:
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(EngineError(str(error)))

    def _give_up(self, error: EngineError) -> None:
        """No worker can run jobs: fail the waiting ones, and every later one at once."""
        self._unable = error
        waiting = [self._jobs.pop(r.job_id) for r in list(self._queue)]
        self._queue = FairQueue()
        for job in waiting:
            _settle(job.future, error=error)

    async def _next_batch(self) -> list[Work] | None:
        """The next batch for an idle slot, or None when the executor is closing."""
        while not self._closing:
            if self._queue:
                # Share the waiting images among the idle workers, rather than one worker
                # batching everything while another has nothing to do.
                images = sum(request.count for request in self._queue)
                share = math.ceil(images / (1 + self._idle))
                return self._queue.pop_batch(max(1, min(self._max_batch, share)))
            self._work.clear()
            self._idle += 1
            try:
                await self._work.wait()
            finally:
                self._idle -= 1
        return None

    async def _run_batch(self, slot: WorkerSlot, batch: list[Work]) -> bool:
        """Run `batch` on `slot` and settle its jobs; True when the worker was lost."""
        for request in batch:
            self._running[request.job_id] = slot
            self._jobs[request.job_id].position = 0  # if it comes back to the queue, say so
        self._post_positions()
        for request in batch:
            self._deliver(StepReport((request.job_id,), 0, request.denoising_steps))
        started = time.perf_counter()
        try:
            outcomes = await slot.run(batch, self._deliver, self._cancelled.__contains__)
        except WorkerLost as error:
            log.warning("worker %s was lost during a batch of %d jobs (%s); they go back to the "
                        "head of the queue", slot.name, len(batch), error)
            self._requeue(batch, error.attempts)
            return True
        except EngineError as error:
            outcomes = {r.job_id: error for r in batch}
        except Exception:  # the worker failed as a whole; it lives on
            log.exception("a batch of %d jobs failed on worker %s", len(batch), slot.name)
            outcomes = {r.job_id: EngineError(BATCH_FAILED) for r in batch}
        elapsed = time.perf_counter() - started
        images = sum(r.count for r in batch if r.job_id not in self._cancelled)
        if images:
            self._recent.append((images, elapsed))
        for request in batch:
            job = self._jobs.pop(request.job_id)
            del self._running[request.job_id]
            self._cancelled.discard(request.job_id)
            outcome = outcomes.get(request.job_id, JobCancelled())
            if isinstance(outcome, asyncio.Future):  # settled when its pictures are finished
                outcome.add_done_callback(functools.partial(self._finished, slot, job))
            else:
                self._conclude(slot, job, outcome)
        return False

    def _finished(self, slot: WorkerSlot, job: _Job, finishing: Finished) -> None:
        self._conclude(slot, job, JobCancelled() if finishing.cancelled()
                       else finishing.exception() or finishing.result())

    def _conclude(self, slot: WorkerSlot, job: _Job, outcome: Outcome) -> None:
        if isinstance(outcome, BaseException):
            _settle(job.future, error=outcome)
        else:
            self.jobs_done += 1
            slot.jobs_done += 1
            _settle(job.future, outcome)

    def _requeue(self, batch: list[Work], attempts: int = MAX_ATTEMPTS) -> None:
        """Put a lost batch back at the head of the queue, in its order, for another worker;
        a job lost `attempts` times fails instead."""
        for request in reversed(batch):
            job = self._jobs[request.job_id]
            del self._running[request.job_id]
            job.attempts += 1
            if request.job_id in self._cancelled or job.future.done():
                self._cancelled.discard(request.job_id)
                del self._jobs[request.job_id]
            elif self._closing:
                del self._jobs[request.job_id]
                _settle(job.future, error=ExecutorClosed())
            elif job.attempts >= attempts:
                del self._jobs[request.job_id]
                _settle(job.future, error=EngineError(
                    f"The worker running this job was lost {job.attempts} times; giving up"))
            else:
                self._queue.push(request, front=True)
        self._post_positions()
        self._work.set()

    async def _recover(self, slot: WorkerSlot) -> bool:
        """Wait for a lost worker to come back; False when it will not (or we are closing)."""
        slot.state = "restarting"
        recovering = asyncio.ensure_future(slot.recover())
        closing = asyncio.ensure_future(self._closed.wait())
        await asyncio.wait({recovering, closing}, return_when=asyncio.FIRST_COMPLETED)
        closing.cancel()
        if not recovering.done():
            recovering.cancel()
            return False
        if recovering.exception() is None and recovering.result():
            log.info("worker %s is back", slot.name)
            slot.state = "ready"
            return True
        log.error("worker %s is gone for good", slot.name, exc_info=recovering.exception())
        slot.state = "gone"
        if not any(s.state in ("starting", "ready", "busy", "restarting") for s in self._slots):
            self._give_up(EngineError("Every image worker is gone; ask an admin to restart"))
        return False

    # ---- progress ---------------------------------------------------------------------------

    def _call_soon(self, callback: Callable[..., Any], *args: Any) -> None:
        # Callbacks run on their own turn of the loop, never inside submit/cancel/a report.
        assert self._loop is not None
        self._loop.call_soon(callback, *args)

    def _post_positions(self) -> None:
        """Tell each queued job whose place (or what it waits for) changed where it stands."""
        retrying = self.engine_state() is EngineState.RETRYING
        for place, request in enumerate(self._queue, start=1):
            job = self._jobs[request.job_id]
            if (job.position, job.engine_retrying) != (place, retrying) \
                    and job.on_progress is not None:
                job.position, job.engine_retrying = place, retrying
                self._call_soon(job.on_progress, Progress(request.job_id, "queued", position=place,
                                                          engine_retrying=retrying))

    def _loading(self, slot: WorkerSlot, loading: Loading | None) -> None:
        """Tell the waiting jobs, and those of `slot`'s batch, how far its model's loading got
        (and, with None, that it is done)."""
        text = loading.text if loading is not None else None
        for place, request in enumerate(self._queue, start=1):
            job = self._jobs[request.job_id]
            if job.on_progress is not None:
                self._call_soon(job.on_progress, Progress(request.job_id, "queued",
                                                          position=place, loading=text))
        for job_id, running in self._running.items():
            busy = self._jobs.get(job_id)
            if running is slot and text is not None and busy is not None \
                    and busy.on_progress is not None and job_id not in self._cancelled:
                self._call_soon(busy.on_progress, Progress(
                    job_id, "running", total=busy.request.denoising_steps, loading=text))

    def _deliver(self, report: StepReport) -> None:
        """Fan a worker's step report out to the jobs in it that still want it."""
        for job_id in report.job_ids:
            job = self._jobs.get(job_id)
            if job is None or job.on_progress is None or job_id in self._cancelled \
                    or job_id not in self._running:
                continue
            progress = Progress(job_id, "running", step=report.step, total=report.total,
                                preview=report.previews.get(job_id))
            self._call_soon(job.on_progress, progress)


class ThreadSlot(WorkerSlot):
    """A `Worker` on a thread of this process: built, warmed up and run there, and only there.

    When the GPU fails for good during a batch (`DeviceFault`), the worker ends: the batch goes
    back to the queue as a lost worker's would, and `recover` builds a new worker on a new
    thread. (A CUDA context that the error poisoned for the whole process fails that rebuild's
    warm-up; the slot is then gone, and the bot must be restarted.)"""

    def __init__(self, factory: Callable[[], Worker], warm_up: GenerationRequest | None,
                 name: str = "local") -> None:
        super().__init__(name)
        self.factory = factory
        self.warm_up = warm_up
        self.worker: Worker | None = None
        self._thread: EngineThread | None = None

    async def start(self) -> None:
        if self._thread is None:  # a try after a failed one builds on the same thread
            self._thread = EngineThread("atelier-gpu")
        thread = self._thread
        loop = asyncio.get_running_loop()

        def loading_soon(loading: Loading | None) -> None:  # on the worker's thread
            try:
                loop.call_soon_threadsafe(self._loading_changed, loading)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                pass

        self.worker = await asyncio.wrap_future(thread.call(self._build, loading_soon))
        self.details = describe_worker(self.worker)

    def _build(self, loading_soon: Callable[[Loading | None], None]) -> Worker:
        worker = self.factory()
        worker.on_loading = loading_soon
        if self.warm_up is not None:
            started = time.perf_counter()
            outcome = worker.run([self.warm_up])[self.warm_up.job_id]
            if isinstance(outcome, BaseException):
                raise outcome
            log.info("engine warmed up in %.1f s", time.perf_counter() - started)
        return worker

    async def run(self, batch: Sequence[Work], report: Reporter,
                  cancelled: Callable[[str], bool]) -> dict[str, Outcome | Finished]:
        assert self.worker is not None and self._thread is not None
        loop = asyncio.get_running_loop()

        def report_soon(step: StepReport) -> None:  # on the worker's thread
            try:
                loop.call_soon_threadsafe(report, step)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                pass

        try:
            # The engine's thread is free again once the pictures are decoded; they are
            # finished (safety check, PNGs) on other threads while it runs the next batch.
            finishing: dict[str, Finishing] = await asyncio.wrap_future(
                self._thread.call(self.worker.start, list(batch), report_soon, cancelled))
        except DeviceFault as fault:
            log.error("worker %s: the GPU failed (%s); building the worker again", self.name,
                      fault)
            self.worker = None
            self._thread.stop()
            self._thread = None  # `recover` builds on a new one
            raise WorkerLost(f"the GPU failed: {fault}", attempts=FAULT_ATTEMPTS) from None
        finally:
            self.details = describe_worker(self.worker)
        return {job_id: asyncio.wrap_future(future) for job_id, future in finishing.items()}

    async def recover(self) -> bool:
        """Build the worker again after a GPU failure, on a new thread."""
        try:
            await self.start()
        except Exception:
            log.exception("worker %s could not be built again", self.name)
            return False
        return True

    async def stop(self) -> None:
        if self._thread is not None:
            self._thread.stop()
            await asyncio.to_thread(self._thread.join)
        if self.worker is not None:
            await asyncio.to_thread(self.worker.drain)  # the last pictures are finished first


class LocalExecutor(Executor):
    """Runs requests on one `Worker` in a background thread of this process, fair and batched."""

    def __init__(self, worker_factory: Callable[[], Worker], max_batch: int,
                 warm_up: GenerationRequest | None = None, start_timeout: float = 0.0) -> None:
        super().__init__(max_batch, start_timeout)
        self._slot = ThreadSlot(worker_factory, warm_up)

    @property
    def worker(self) -> Worker | None:
        return self._slot.worker

    async def _open(self) -> list[WorkerSlot]:
        self._slot.on_loading = self._loading
        return [self._slot]
