"""Images per second with 1 and 2 Ray workers for the same jobs, on CPU, with a model of real cost.

The model is a randomly initialised SD-style pipeline, much larger than `tiny` (a UNet of 18 M
parameters at 256²: one image takes about 2 s at 10 steps on one core), built once into a cache
folder. Each run starts a `RayExecutor` with N CPU workers of `--threads` torch threads each,
waits until every worker has loaded the model and warmed up, then times the same jobs (one image
each, several users, compatible, so the fair queue batches them) from the first submit to the
last result.

    python bench/scale.py                      # 16 jobs, 1 and 2 workers, 1 thread each
    python bench/scale.py --jobs 8 --steps 5   # quicker

On a machine with fewer cores than workers × threads (plus one for the bot's event loop and
Ray's own processes) the workers compete for cores: the ratio then measures that machine, not
the scaling. So it first measures the machine's own ceiling: how much faster two plain processes
(no Ray, no bot) get the same convolutions done than one; 2 workers cannot beat that.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# Ray's worker processes import `bot` too: they inherit this from the Ray started below.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.models import SCALE_SHAPE, saved_sd_like  # noqa: E402
from bot.engine.models import describe  # noqa: E402
from bot.engine.types import GenerationRequest  # noqa: E402
from bot.engine.worker import WorkerConfig  # noqa: E402

SIDE = SCALE_SHAPE.side


def _convolutions(threads: int) -> float:
    """Seconds for a fixed amount of UNet-like work (3×3 convolutions at 32², 64 channels)."""
    import torch

    torch.set_num_threads(threads)
    conv = torch.nn.Conv2d(64, 64, 3, padding=1)
    x = torch.randn(16, 64, 32, 32)
    with torch.inference_mode():
        conv(x)
        started = time.perf_counter()
        for _ in range(150):
            conv(x)
    return time.perf_counter() - started


def machine_ceiling(threads: int, processes: int = 2) -> float:
    """How many times more work `processes` plain processes do than one in the same time."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(processes, mp_context=context) as pool:
        pool.submit(_convolutions, threads).result()  # start-up and imports, not timed
        alone = pool.submit(_convolutions, threads).result()
        together = max(pool.map(_convolutions, [threads] * processes))
    return processes * alone / together


def request(job_id: str, user: str, seed: int, steps: int) -> GenerationRequest:
    return GenerationRequest(job_id=job_id, user_key=user, model="bench", prompt="a red fox",
                             negative="", width=SIDE, height=SIDE, steps=steps, guidance=7.0,
                             sampler="euler", seeds=(seed,))


async def run(workers: int, config: WorkerConfig, jobs: int, steps: int, threads: int,
              max_batch: int) -> float:
    """Images per second for `jobs` one-image jobs on `workers` Ray workers."""
    from bot.engine.ray_executor import RayExecutor

    executor = RayExecutor(config, max_batch, warm_up=request("warm-up", "", 0, 1),
                           workers=workers, cpu_threads=threads)
    executor.start()
    try:
        await executor.ready()
        started = time.perf_counter()
        futures = [executor.submit(request(f"job{i}", f"user{i % 4}", i, steps))
                   for i in range(jobs)]
        results = await asyncio.gather(*futures)
        elapsed = time.perf_counter() - started
        per_worker = ", ".join(f"{w.name} {w.jobs_done}" for w in executor.workers())
    finally:
        await executor.close()
    images = sum(len(result.images) for result in results)
    rate = images / elapsed
    print(f"{workers} worker{'s' if workers > 1 else ' '}: {images} images in {elapsed:6.1f} s"
          f" = {rate:.3f} images/s  (jobs per worker: {per_worker})")
    return rate


async def main(args: argparse.Namespace) -> None:
    from bot.engine.ray_executor import connect

    ceiling = machine_ceiling(args.threads, max(args.workers))
    print(f"this machine: {max(args.workers)} plain processes of {args.threads} torch thread(s) "
          f"do {ceiling:.2f}× the work of one ({os.cpu_count()} CPU cores)")
    folder = saved_sd_like(Path(args.cache), SCALE_SHAPE)
    config = WorkerConfig(models=(describe("bench", str(folder)),), device="cpu",
                          cache_dir=str(folder.parent), max_batch=args.max_batch)
    # one Ray CPU per worker: the largest run must fit
    connect("", num_cpus=max(args.workers))
    rates = {n: await run(n, config, args.jobs, args.steps, args.threads, args.max_batch)
             for n in args.workers}
    import ray

    ray.shutdown()
    base = rates[args.workers[0]]
    for n in args.workers[1:]:
        print(f"ratio {n}/{args.workers[0]} workers: {rates[n] / base:.2f}×"
              f"  ({os.cpu_count()} CPU cores here, {args.threads} torch thread(s) per worker;"
              f" the machine's own ceiling: {ceiling:.2f}×)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "atelier-bench"))
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main(parser.parse_args()))
