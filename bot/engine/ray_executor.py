"""`EXECUTOR=ray`: the same fair queue, its batches run by `Worker`s in Ray actors, one per GPU.

The bot keeps the one `FairQueue` (`bot.engine.executor.Executor`); each actor is a worker slot
that takes a batch when idle. Only plain dataclasses cross the network: requests (prompts,
parameters, init images) in, `GenerationResult`s (PNG bytes, seeds) and `StepReport`s out.

Progress and cancel use a *threaded actor* (`max_concurrency=4`), not a `ray.util.queue.Queue`:
`run` blocks one actor thread for the whole batch while `poll` (the bot asks every
`POLL_INTERVAL`) and `cancel` are served on the others. Why not a queue: a Ray queue is one more
actor to place, restart and lose, every step would make two hops (worker → queue actor → bot),
and cancel would need a second queue in the other direction. Polling lets the actor coalesce:
only the newest step and preview of each job cross per poll, however many steps ran, and
when the actor dies its poll fails together with its `run`, so there is no orphaned state.
The pipeline itself runs on one dedicated thread inside the actor (`EngineThread`), never on
Ray's pool threads, because CUDA graphs must be replayed on the thread that captured them.

Faults: actors are created with `max_restarts=-1`, so Ray starts a dead worker again by itself
(on the same node or, if that node is gone, wherever a GPU is free), and `max_task_retries=0`, so
the bot, not Ray, decides what happens to the lost batch: back to the head of the fair queue, for
whichever worker is idle first, with the same seeds. A job whose worker dies `MAX_ATTEMPTS` times
fails instead of crash-looping the pool."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bot.engine.executor import (
    EngineThread,
    Executor,
    Finished,
    WorkerDetails,
    WorkerLost,
    WorkerSlot,
    describe_worker,
)
from bot.engine.types import GenerationRequest, Work
from bot.engine.worker import (
    DeviceFault,
    Outcome,
    Reporter,
    StepReport,
    Worker,
    WorkerConfig,
)

log = logging.getLogger(__name__)

NAMESPACE = "atelier"
OBJECT_STORE_BYTES = 256 * 1024 * 1024  # results are a few MB of PNG; the default takes 30% RAM
POLL_INTERVAL = 0.25  # seconds between progress polls of a running batch
CPU_WORKERS = 1  # workers on a cluster without GPUs when RAY_WORKERS is not set
RESTART_POLL = 1.0  # seconds between checks on a restarting actor that is not reachable yet


def connect(address: str = "", num_cpus: int | None = None) -> bool:
    """Join the Ray cluster at `address`, or start a local one when it is empty; True when this
    call started or joined Ray (so it is ours to shut down), False when Ray was already up."""
    import ray

    if ray.is_initialized():
        return False
    _idle.clear()  # handles from an earlier Ray session mean nothing in this one
    common: dict[str, Any] = {"namespace": NAMESPACE, "log_to_driver": False,
                              "logging_level": logging.WARNING}
    if address:
        ray.init(address=address, **common)
    else:
        # "local": a new Ray of our own, even where `ray start` left one running on this machine
        # (without an address, ray.init would join that one).
        ray.init(address="local", num_cpus=num_cpus, object_store_memory=OBJECT_STORE_BYTES,
                 include_dashboard=False, **common)
    return True


Setup = tuple[WorkerConfig, GenerationRequest | None, int | None]  # a WorkerActor's arguments


@dataclass(frozen=True)
class Placement:
    """How many workers to start and what each asks Ray for."""

    count: int
    gpu: bool  # each worker takes a whole GPU
    threads: int | None  # torch threads of a CPU worker (None: a GPU worker's default)

    @property
    def resources(self) -> dict[str, int]:
        return {"num_gpus": 1 if self.gpu else 0, "num_cpus": 1}


def placement(device: str, gpus: int, workers: int | None, cpu_threads: int | None,
              cores: int) -> Placement:
    """Workers that will run on a GPU ask Ray for one each (RAY_WORKERS defaults to one per
    GPU); workers told to run on the CPU (`SD_DEVICE=cpu`) ask for none, even on a cluster that
    has GPUs: a GPU each would leave all but the first waiting forever on a one-GPU machine."""
    if gpus and device in ("auto", "cuda"):
        return Placement(workers or gpus, gpu=True, threads=None)
    count = workers or CPU_WORKERS
    # CPU workers are assumed to share the bot's machine: leave it a core, split the rest.
    return Placement(count, gpu=False, threads=cpu_threads or max(1, (cores - 1) // count))


class WorkerActor:
    """The body of a Ray actor: a `Worker` on its own thread, with progress and cancel beside it.

    Its methods run on the actor's thread pool; `run` hands the batch to the engine thread."""

    def __init__(self, config: WorkerConfig, warm_up: GenerationRequest | None,
                 cpu_threads: int | None) -> None:
        logging.basicConfig(level=logging.INFO)
        self._lock = threading.Lock()
        self._cancelled: set[str] = set()
        self._latest: StepReport | None = None
        self._thread = EngineThread("atelier-gpu")
        self._setup: Setup = (config, warm_up, cpu_threads)
        self.worker: Worker | None = self._thread.call(self._build, *self._setup).result()

    @staticmethod
    def _build(config: WorkerConfig, warm_up: GenerationRequest | None,
               cpu_threads: int | None) -> Worker:
        worker = Worker(config)
        if worker.device == "cpu" and cpu_threads:
            import torch

            # Several CPU workers on one machine must share its cores, not each take them all.
            torch.set_num_threads(cpu_threads)
        if warm_up is not None:
            started = time.perf_counter()
            outcome = worker.run([warm_up])[warm_up.job_id]
            if isinstance(outcome, BaseException):
                raise outcome
            log.info("worker warmed up in %.1f s", time.perf_counter() - started)
        return worker

    def configure(self, config: WorkerConfig, warm_up: GenerationRequest | None,
                  cpu_threads: int | None) -> WorkerDetails:
        """Serve a new executor: forget the last one's jobs, and rebuild the worker if its
        settings differ (the process, its imports and CUDA context are kept)."""
        with self._lock:
            self._cancelled.clear()
            self._latest = None
        setup: Setup = (config, warm_up, cpu_threads)
        if setup != self._setup or self.worker is None:
            self.worker, self._setup = None, setup
            self._thread.call(_free_memory).result()
            self.worker = self._thread.call(self._build, *setup).result()
        return self.details()

    def details(self) -> WorkerDetails:
        return describe_worker(self.worker)

    def run(self, batch: list[Work]) -> tuple[dict[str, Outcome], WorkerDetails]:
        assert self.worker is not None, "configure failed; the slot does not use this actor"
        try:
            outcomes: dict[str, Outcome] = self._thread.call(
                self.worker.run, batch, self._report, self._is_cancelled).result()
        except DeviceFault as fault:
            # The GPU is unusable to this process: end it, and Ray starts the worker again (the
            # bot puts the batch back in the queue, as for any worker that died).
            log.critical("the GPU failed (%s); ending this worker so that Ray restarts it", fault)
            logging.shutdown()
            os._exit(1)
        finally:
            with self._lock:
                self._cancelled.difference_update(request.job_id for request in batch)
        return outcomes, self.details()

    def poll(self) -> list[StepReport]:
        """The newest step report since the last poll (with the newest preview of each job)."""
        with self._lock:
            latest, self._latest = self._latest, None
        return [] if latest is None else [latest]

    def cancel(self, job_id: str) -> None:
        with self._lock:
            self._cancelled.add(job_id)

    def _is_cancelled(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._cancelled

    def _report(self, report: StepReport) -> None:
        with self._lock:
            previous = self._latest
            previews = dict(previous.previews) if previous is not None else {}
            previews.update(report.previews)
            self._latest = StepReport(report.job_ids, report.step, report.total, previews)


def _free_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


async def _result(ref: Any) -> Any:
    """Await an object ref without blocking the loop (`future()` exists on client refs too).

    Cancelling the wait leaves the ref's future alone: Ray Client fails loudly when it settles a
    future that was cancelled under it."""
    waiting = asyncio.wrap_future(ref.future())
    waiting.add_done_callback(_retrieve)
    return await asyncio.shield(waiting)


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark an abandoned result as seen, so asyncio does not log it as never retrieved."""
    if not future.cancelled():
        future.exception()


# Actors of executors closed in this process, kept for the next executor with the same resource
# options: a new worker process pays seconds of imports (and CUDA start-up) before its model
# loads. They are fate-shared with this process like any other actor of ours.
_idle: list[tuple[str, Any]] = []


async def _kill(actor: Any) -> None:
    import ray

    with contextlib.suppress(Exception):  # already dead, or Ray already shut down
        await asyncio.to_thread(ray.kill, actor, no_restart=True)


class RaySlot(WorkerSlot):
    """One worker slot backed by a Ray actor."""

    def __init__(self, name: str, kind: str, setup: Setup,
                 make_actor: Callable[[], Any]) -> None:
        super().__init__(name)
        self._kind = kind  # the actor's resource options, as a key for reuse
        self._setup = setup
        self._make_actor = make_actor
        self.actor: Any = None
        self._background: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        from ray.exceptions import RayError, RayTaskError

        if self.actor is not None:  # from a try that failed: a new try starts a new actor
            await _kill(self.actor)
            self.actor = None
        reused = next((i for i, (kind, _) in enumerate(_idle) if kind == self._kind), None)
        if reused is not None:
            _, actor = _idle.pop(reused)
            try:
                self.details = await _result(actor.configure.remote(*self._setup))
                self.actor = actor
            except RayTaskError as error:  # these settings do not work: say so, as a new one would
                await _kill(actor)
                raise RuntimeError(str(error.cause)) from error
            except RayError:  # it died while idle, or belongs to an earlier Ray session
                await _kill(actor)
        if self.actor is None:
            self.actor = await asyncio.to_thread(self._make_actor)
            # The first call waits for the actor's constructor: model loaded, warmed up.
            self.details = await _result(self.actor.details.remote())
        details = self.details
        assert details is not None
        log.info("worker %s ready on %s (%s, pid %d)%s", self.name, details.node, details.device,
                 details.pid, " (reused)" if reused is not None else "")

    async def run(self, batch: Sequence[Work], report: Reporter,
                  cancelled: Callable[[str], bool]) -> dict[str, Outcome | Finished]:
        from ray.exceptions import RayError, RayTaskError

        ref = self.actor.run.remote(list(batch))
        done = asyncio.Event()
        polling = asyncio.create_task(self._poll(report, done))
        try:
            outcomes, self.details = await _result(ref)
        except BaseException as error:
            # No last poll: calls to a restarting actor wait until it is back.
            polling.cancel()
            if isinstance(error, RayTaskError):  # `run` itself raised: a bug, not a lost worker
                raise RuntimeError(str(error)) from error
            if isinstance(error, RayError):
                raise WorkerLost(f"{type(error).__name__}: {str(error).splitlines()[0]}") \
                    from error
            raise
        done.set()
        # a last poll: the steps run since the one before, so progress ends where it did
        await polling
        return dict(outcomes)

    async def _poll(self, report: Reporter, done: asyncio.Event) -> None:
        """Fetch the batch's newest progress every `POLL_INTERVAL` until `done`, then once more."""
        from ray.exceptions import RayError

        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), POLL_INTERVAL)
            try:
                steps = await _result(self.actor.poll.remote())
            except RayError:
                return  # the worker is gone; `run` says so
            for step in steps:
                report(step)
            if done.is_set():
                return

    def cancel(self, job_id: str) -> None:
        task = asyncio.create_task(self._cancel(job_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _cancel(self, job_id: str) -> None:
        from ray.exceptions import RayError

        with contextlib.suppress(RayError):  # a lost worker has nothing left to cancel
            await _result(self.actor.cancel.remote(job_id))

    async def recover(self) -> bool:
        from ray.exceptions import ActorDiedError, RayError, RayTaskError

        while True:
            try:
                # Calls to a restarting actor wait for its constructor (the settings it was
                # created with); `configure` then brings it to this executor's.
                self.details = await _result(self.actor.configure.remote(*self._setup))
                return True
            except (ActorDiedError, RayTaskError):  # out of restarts, or cannot start again
                return False
            except RayError:  # not reachable yet
                await asyncio.sleep(RESTART_POLL)

    async def stop(self) -> None:
        if self.actor is None:
            return
        if self.state in ("ready", "busy"):
            _idle.append((self._kind, self.actor))
        else:
            await _kill(self.actor)
        self.actor = None


class RayExecutor(Executor):
    """The fair queue in the bot; its batches run on `Worker`s in Ray actors (see the module)."""

    def __init__(self, config: WorkerConfig, max_batch: int,
                 warm_up: GenerationRequest | None = None, address: str = "",
                 workers: int | None = None, cpu_threads: int | None = None,
                 start_timeout: float = 0.0) -> None:
        super().__init__(max_batch, start_timeout)
        self._config = config
        self._warm_up = warm_up
        self._address = address
        self._workers = workers
        self._cpu_threads = cpu_threads
        self._owns_ray = False

    async def _open(self) -> list[WorkerSlot]:
        import ray

        # A local Ray gets at least one CPU per worker, so that CPU workers can all be placed.
        num_cpus = max(os.cpu_count() or 1, self._workers or 1)
        self._owns_ray = await asyncio.to_thread(connect, self._address, num_cpus)
        resources = await asyncio.to_thread(ray.cluster_resources)
        gpus = int(resources.get("GPU", 0))
        place = placement(self._config.device, gpus, self._workers, self._cpu_threads,
                          os.cpu_count() or 2)
        count, threads = place.count, place.threads
        options: dict[str, Any] = {
            "max_restarts": -1,
            "max_task_retries": 0,
            "max_concurrency": 4,  # run + poll + cancel + details at once
            **place.resources,
        }
        if place.gpu and count > gpus:
            log.warning("RAY_WORKERS=%d but the cluster has %d GPUs: %d workers wait for one",
                        count, gpus, count - gpus)
        log.info("Ray %s: %d %s (cluster: %s)",
                 "started here" if self._owns_ray and not self._address else "joined", count,
                 "GPU workers" if place.gpu
                 else f"CPU workers of {threads} torch thread(s) each", resources)
        kind = repr(sorted(options.items()))
        # Idle actors of an earlier executor are reused when they fit; others free their GPUs.
        fitting = [entry for entry in _idle if entry[0] == kind][:count]
        for entry in [entry for entry in _idle if entry not in fitting]:
            _idle.remove(entry)
            await _kill(entry[1])
        actor_class = ray.remote(WorkerActor)
        setup: Setup = (self._config, self._warm_up, threads)

        def make_actor() -> Any:
            return actor_class.options(**options).remote(*setup)

        return [RaySlot(f"ray-{index + 1}", kind, setup, make_actor) for index in range(count)]

    async def _shut(self) -> None:
        await super()._shut()
        if self._owns_ray:
            import ray

            self._owns_ray = False
            _idle.clear()  # they go with the Ray this executor started
            await asyncio.to_thread(ray.shutdown)
