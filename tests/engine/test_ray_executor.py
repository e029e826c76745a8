"""`RayExecutor` on a local Ray, CPU workers, the tiny model: parallel runs, faults, pixels."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest
import pytest_asyncio
from PIL import Image

from bot.engine.executor import Executor, LocalExecutor, WorkerInfo
from bot.engine.models import FAMILIES, ModelSpec, describe
from bot.engine.types import (
    EngineError,
    GenerationRequest,
    GenerationResult,
    JobCancelled,
    Mode,
    Progress,
)
from bot.engine.worker import Worker, WorkerConfig
from tests.engine.helpers import difference, make_request

ray = pytest.importorskip("ray")

from bot.engine.ray_executor import RayExecutor, connect  # noqa: E402

pytestmark = pytest.mark.ray

TIMEOUT = 120  # generous: two workers share two cores with the rest of the suite


def start_ray_once(request: pytest.FixtureRequest) -> None:
    """One local Ray for the whole test session, shut down when the session ends.

    Shared with the end-to-end Ray tests; whichever module's fixture runs first starts it."""
    if connect("", num_cpus=2):
        request.session.addfinalizer(ray.shutdown)


@pytest.fixture(scope="session")
def ray_cluster(request: pytest.FixtureRequest) -> None:
    start_ray_once(request)


def tiny_config(tiny_model_dir: Path) -> WorkerConfig:
    return WorkerConfig(models=(describe("tiny", "tiny"),), cache_dir=str(tiny_model_dir.parent),
                        device="cpu")


StartRay = Callable[..., Awaitable[RayExecutor]]


@pytest_asyncio.fixture
async def start_ray(ray_cluster: None, tiny_model_dir: Path) -> AsyncIterator[StartRay]:
    started: list[Executor] = []

    async def start(workers: int = 2, config: WorkerConfig | None = None,
                    max_batch: int = 8, ready: bool = True) -> RayExecutor:
        executor = RayExecutor(config or tiny_config(tiny_model_dir), max_batch,
                               warm_up=make_request("warm-up", steps=1), workers=workers,
                               cpu_threads=1)
        executor.start()
        started.append(executor)
        if ready:
            await asyncio.wait_for(executor.ready(), TIMEOUT)
        return executor

    yield start
    for executor in started:
        await asyncio.wait_for(executor.close(), TIMEOUT)


async def _all(futures: list[asyncio.Future[GenerationResult]]) -> list[GenerationResult]:
    return list(await asyncio.wait_for(asyncio.gather(*futures), TIMEOUT))


def assert_same_images(result: GenerationResult, reference: GenerationResult) -> None:
    assert [image.seed for image in result.images] == [image.seed for image in reference.images]
    for image, expected in zip(result.images, reference.images, strict=True):
        assert difference(image, expected) == 0


async def test_two_workers_serve_several_users_in_parallel(start_ray: StartRay) -> None:
    executor = await start_ray(workers=2)
    assert [(w.name, w.state, w.device, w.models) for w in executor.workers()] == [
        ("ray-1", "ready", "cpu", ("tiny",)), ("ray-2", "ready", "cpu", ("tiny",))]
    began: dict[str, float] = {}
    previews: set[str] = set()

    def on_progress(progress: Progress) -> None:
        if progress.state == "running":
            began.setdefault(progress.job_id, time.perf_counter())
            if progress.preview:
                previews.add(progress.job_id)

    # three users, steps that differ: no two jobs can share a pipeline call
    requests = [make_request(f"{user}{i}", user_key=user, steps=24 + 3 * i + j)
                for i in range(2) for j, user in enumerate(("alice", "bob", "carol"))]
    ended: dict[str, float] = {}
    futures = []
    for request in requests:
        future = executor.submit(request, on_progress)
        future.add_done_callback(lambda f, job_id=request.job_id:
                                 ended.setdefault(job_id, time.perf_counter()))
        futures.append(future)
    results = await _all(futures)
    assert [r.job_id for r in results] == [r.job_id for r in requests]
    # the first turn goes to each user once, whichever worker ran it
    assert sorted(began, key=began.__getitem__)[:3] == ["alice0", "bob0", "carol0"]
    # jobs ran at the same time: some job started before another had ended, on the other worker
    overlaps = [(a, b) for a in began for b in began
                if a != b and began[a] <= began[b] < ended[a]]
    assert overlaps, (began, ended)
    assert all(w.jobs_done for w in executor.workers())
    assert sum(w.jobs_done for w in executor.workers()) == executor.stats().jobs_done == 6
    assert previews  # previews decoded on the worker reached the bot


async def test_killing_a_worker_mid_batch_loses_no_job_and_changes_no_image(
    start_ray: StartRay, tiny_worker: Worker,
) -> None:
    executor = await start_ray(workers=2)
    events: dict[str, list[Progress]] = {}

    def on_progress(progress: Progress) -> None:
        events.setdefault(progress.job_id, []).append(progress)

    requests = [make_request(f"job{i}", user_key=f"user{i % 3}", seeds=(10 * i, 10 * i + 1),
                             steps=40 + i) for i in range(4)]
    futures = [executor.submit(request, on_progress) for request in requests]
    # wait until a job is well into its batch, then kill the process of the worker running it
    deadline = time.monotonic() + TIMEOUT
    while not any(p.step >= 5 for progress in events.values() for p in progress):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    busy = [w for w in executor.workers() if w.state == "busy"]
    assert busy and all(w.pid for w in busy)
    killed = busy[0]
    assert killed.pid is not None
    os.kill(killed.pid, signal.SIGKILL)

    seen: list[WorkerInfo] = []
    results = []
    for future in futures:
        while not future.done():
            seen.extend(executor.workers())
            await asyncio.sleep(0.05)
        results.append(future.result())
    assert [r.job_id for r in results] == [r.job_id for r in requests]  # no job lost
    # while the killed worker was restarting, the other one went on
    assert any(w.name == killed.name and w.state == "restarting" for w in seen)
    # the lost job went back to the queue (at its head) and ran again from the start
    went_back = [job_id for job_id, progress in events.items()
                 if any(a.state == "running" and b.state == "queued"
                        for a, b in zip(progress, progress[1:], strict=False))]
    assert went_back, events
    for job_id in went_back:
        after = events[job_id][[p.state for p in events[job_id]].index("queued", 1):]
        assert after[0].position == 1
        assert [p.step for p in after if p.state == "running"][0] == 0
    # the same pictures as the local worker makes for the same seeds
    for request, result in zip(requests, results, strict=True):
        reference = tiny_worker.run([request])[request.job_id]
        assert isinstance(reference, GenerationResult)
        assert_same_images(result, reference)
    # the killed worker comes back by itself, in a new process
    deadline = time.monotonic() + TIMEOUT
    while True:
        workers = {w.name: w for w in executor.workers()}
        if workers[killed.name].state == "ready":
            break
        assert time.monotonic() < deadline, workers
        await asyncio.sleep(0.1)
    assert workers[killed.name].pid != killed.pid
    again = await _all([executor.submit(make_request("after", seeds=(5,)))])
    assert again[0].job_id == "after"


async def test_local_and_ray_give_the_same_pixels(start_ray: StartRay,
                                                  tiny_worker: Worker) -> None:
    start = io.BytesIO()
    Image.new("RGB", (128, 128), (200, 30, 30)).save(start, format="PNG")
    requests: list[GenerationRequest] = [
        make_request("grid", seeds=(42, 43, 44, 45), steps=6),
        make_request("wide", seeds=(7,), steps=5, width=168, height=96, user_key="bob"),
        make_request("img2img", seeds=(3, 4), steps=8, mode=Mode.IMG2IMG,
                     init_image=start.getvalue(), strength=0.6, user_key="carol"),
    ]
    local = LocalExecutor(lambda: tiny_worker, max_batch=8)
    local.start()
    try:
        local_results = await _all([local.submit(request) for request in requests])
    finally:
        await local.close()
    executor = await start_ray(workers=2)
    ray_results = await _all([executor.submit(request) for request in requests])
    for on_ray, here in zip(ray_results, local_results, strict=True):
        assert_same_images(on_ray, here)


async def test_cancel_reaches_a_batch_on_a_worker(start_ray: StartRay) -> None:
    executor = await start_ray(workers=1)
    steps: list[tuple[float, int]] = []
    long_job = executor.submit(make_request("long", seeds=(1, 2, 3, 4), steps=150),
                               lambda p: steps.append((time.monotonic(), p.step)))
    deadline = time.monotonic() + TIMEOUT
    while len(steps) < 2 or steps[-1][1] < 10:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    (first_at, first), (last_at, last) = steps[1], steps[-1]
    per_step = (last_at - first_at) / max(1, last - first)
    assert executor.cancel("long") is True
    with pytest.raises(JobCancelled):
        await long_job
    # the one worker is free again long before the rest of the 150 steps would have run
    cancelled_at = time.monotonic()
    [follow_up] = await _all([executor.submit(make_request("next", steps=1))])
    assert follow_up.job_id == "next"
    waited = time.monotonic() - cancelled_at
    assert waited < 0.5 * per_step * (150 - last), (waited, per_step, last)
    assert executor.stats().jobs_done == 1


async def test_a_worker_that_cannot_start(start_ray: StartRay, tiny_model_dir: Path,
                                          tmp_path: Path) -> None:
    # a model folder with nothing in it: the warm-up fails to load it inside the actor
    empty = ModelSpec("tiny", str(tmp_path), FAMILIES["tiny"])
    broken = replace(tiny_config(tiny_model_dir), models=(empty,))
    executor = await start_ray(workers=1, config=broken, ready=False)
    with pytest.raises(EngineError):
        await asyncio.wait_for(executor.ready(), TIMEOUT)
    assert [w.state for w in executor.workers()] == ["failed"]
    with pytest.raises(EngineError, match="could not start"):
        await asyncio.wait_for(executor.submit(make_request("job")), TIMEOUT)

