"""GPU throughput: the naive way (one pipeline call per request) against Atelier's executor.

    python bench/gpu.py                 # SD 1.5, 512², 30 steps, 16 requests from 4 users
    python bench/gpu.py --model sdxl    # SDXL at 1024²
    python bench/gpu.py --compile       # with SD_COMPILE's torch.compile (warm-up not timed)
    python bench/gpu.py --smoke         # tiny model on the CPU: checks the script still works

Full-size models are built from their published configurations with random weights (no
download; the arithmetic, and so the speed, is that of the real models). Prints images/s for
both ways and their ratio, single-request latency, peak GPU memory, and the share of the H100's
dense fp16 peak reached.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.models import H100_DENSE_FP16_TFLOPS, SD15_TFLOP_PER_IMAGE  # noqa: E402
from bot.engine.executor import LocalExecutor  # noqa: E402
from bot.engine.models import FAMILIES, ModelSpec  # noqa: E402
from bot.engine.types import GenerationRequest  # noqa: E402
from bot.engine.worker import Worker, WorkerConfig  # noqa: E402

PROMPTS = ("a lighthouse at dusk", "a red fox in the snow", "a bowl of ramen, studio light",
           "an astronaut riding a horse")


def requests(count: int, users: int, side: int, steps: int, model: str,
             sampler: str) -> list[GenerationRequest]:
    return [
        GenerationRequest(
            job_id=f"job{i:02d}", user_key=f"user{i % users}", model=model,
            prompt=PROMPTS[i % len(PROMPTS)], negative="", width=side, height=side, steps=steps,
            guidance=7.0, sampler=sampler, seeds=(1000 + i,),
        )
        for i in range(count)
    ]


def build(args: argparse.Namespace) -> tuple[Any, ModelSpec, str]:
    import torch

    if args.smoke:
        from diffusers import StableDiffusionPipeline

        from bot.engine.tiny import build_tiny

        folder = build_tiny(Path(args.cache) / "tiny")
        pipe = StableDiffusionPipeline.from_pretrained(folder)
        return pipe, ModelSpec("tiny", "tiny", FAMILIES["tiny"]), "cpu"
    from bench.models import sd15_pipeline, sdxl_pipeline

    if not torch.cuda.is_available():
        sys.exit("no CUDA GPU here: use --smoke to check the script on the CPU")
    if args.model == "sdxl":
        return (sdxl_pipeline("cuda", torch.float16),
                ModelSpec("sdxl", "random", FAMILIES["sdxl"], sdxl=True), "cuda")
    spec = ModelSpec("sd15", "random", FAMILIES["sd1"])
    return sd15_pipeline("cuda", torch.float16), spec, "cuda"


def naive(pipe: Any, batch: list[GenerationRequest], device: str) -> tuple[float, Any]:
    """One plain pipeline call per request, batch 1, one after another; returns the seconds
    and the first picture (the reference the optimised executor must reproduce)."""
    import torch

    pipe.set_progress_bar_config(disable=True)
    first = None
    started = time.perf_counter()
    for request in batch:
        generator = torch.Generator("cpu").manual_seed(request.seeds[0])
        picture = pipe(request.prompt, width=request.width, height=request.height,
                       num_inference_steps=request.steps, guidance_scale=request.guidance,
                       generator=generator).images[0]
        first = first or picture
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started, first


def difference(reference: Any, png: bytes) -> float:
    """Mean absolute pixel difference, as a share of the full 0–255 range."""
    import io

    import numpy as np
    from PIL import Image

    ours = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float64)
    return float(np.abs(ours - np.asarray(reference, dtype=np.float64)).mean() / 255)


async def through_executor(worker: Worker, spec: ModelSpec, pipe: Any, max_batch: int,
                           batch: list[GenerationRequest], lone: GenerationRequest,
                           repeats: int) -> tuple[float, list[float], bytes]:
    def factory() -> Worker:
        worker.adopt(spec, pipe)  # in the executor's thread, where compiled graphs must live
        return worker

    executor = LocalExecutor(factory, max_batch)
    executor.start()
    await executor.ready()
    await executor.submit(lone)  # first call of each shape pays one-off costs; not timed
    started = time.perf_counter()
    results = await asyncio.gather(*(executor.submit(request) for request in batch))
    throughput_seconds = time.perf_counter() - started
    latencies = []
    for i in range(repeats):
        request = GenerationRequest(**{**lone.__dict__, "job_id": f"lone{i}"})
        started = time.perf_counter()
        await executor.submit(request)
        latencies.append(time.perf_counter() - started)
    await executor.close()
    return throughput_seconds, latencies, results[0].images[0].png


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=("sd15", "sdxl"), default="sd15")
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--sampler", default="euler")
    parser.add_argument("--compile", action="store_true", help="torch.compile, like SD_COMPILE=1")
    parser.add_argument("--smoke", action="store_true", help="tiny model on the CPU, few steps")
    parser.add_argument("--cache", default="data/models", help="where the tiny model is kept")
    args = parser.parse_args()
    if args.smoke:
        args.requests, args.users, args.steps, args.max_batch = 4, 2, 4, 4

    import diffusers
    import torch

    diffusers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    pipe, spec, device = build(args)
    side = spec.family.native_side
    batch = requests(args.requests, args.users, side, args.steps, spec.name, args.sampler)
    lone = GenerationRequest(**{**batch[0].__dict__, "job_id": "warm-up"})

    naive(pipe, batch[:1], device)  # warm-up: cuDNN autotuning, allocator
    naive_seconds, reference = naive(pipe, batch, device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    worker = Worker(WorkerConfig(models=(), device=device, dtype="float16" if device == "cuda"
                                 else "float32", max_batch=args.max_batch, compile=args.compile,
                                 cache_dir=args.cache))
    executor_seconds, latencies, first_png = asyncio.run(through_executor(
        worker, spec, pipe, args.max_batch, batch, lone, repeats=3 if args.smoke else 5))

    images = len(batch)
    naive_rate, atelier_rate = images / naive_seconds, images / executor_seconds
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    print(f"device: {name}; model: {spec.name} (random weights), {side}×{side}, "
          f"{args.steps} steps, {images} single-image requests from {args.users} users, "
          f"MAX_BATCH={args.max_batch}{', compiled' if args.compile else ''}")
    print(f"naive (one call per request):  {naive_rate:7.2f} images/s  ({naive_seconds:.2f} s)")
    print(f"atelier executor (batched):    {atelier_rate:7.2f} images/s  "
          f"({executor_seconds:.2f} s)")
    print(f"ratio:                         {atelier_rate / naive_rate:7.2f}×")
    print(f"single request latency:        {statistics.median(latencies):7.3f} s median "
          f"(min {min(latencies):.3f} s)")
    print(f"same seed vs plain pipeline:   {difference(reference, first_png):7.2%} mean "
          "absolute pixel difference")
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**30
        print(f"peak GPU memory (executor):     {peak:7.1f} GiB")
        if spec.name == "sd15":
            tflop = SD15_TFLOP_PER_IMAGE * args.steps / 30 * (side / 512) ** 2
            share = atelier_rate * tflop / H100_DENSE_FP16_TFLOPS
            print(f"share of H100 dense fp16 peak: {share:7.1%} "
                  f"({atelier_rate * tflop:.0f} of {H100_DENSE_FP16_TFLOPS:.0f} TFLOP/s)")


if __name__ == "__main__":
    main()
