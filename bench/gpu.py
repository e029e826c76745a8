"""GPU throughput: the naive way (one pipeline call per request) against Atelier's executor.

    python bench/gpu.py                         # SD 1.5, 512², 30 steps, 16 requests, 4 users
    python bench/gpu.py --model sdxl            # SDXL at 1024²
    python bench/gpu.py --model flux-schnell    # FLUX.1 [schnell], 1024², 4 steps, bfloat16
    python bench/gpu.py --model sd35            # SD 3.5 Large, 1024², 28 steps (also flux-dev,
                                                # sd35-medium)
    python bench/gpu.py --model flux-dev --offload model   # as SD_OFFLOAD=model runs it
    python bench/gpu.py --compile               # with SD_COMPILE's torch.compile (UNet models)
    python bench/gpu.py --smoke                 # a tiny model on the CPU: checks the script runs

Full-size models are built from their published configurations with random weights (no download;
the arithmetic, and so the speed, is that of the real models), in float16 (FLUX.1 and SD 3.5 in
bfloat16, as they run); each runs at its family's default steps and guidance unless told otherwise;
`--smoke --model flux-schnell` (or `sd35`) runs `tiny-flux` (`tiny-sd3`). Every way is warmed up on
the very shapes it is then timed on (cuDNN's autotuning, the allocator, compiled graphs), so only
the steady state is timed. Prints images/s of the naive way, of the executor, and of the executor
with MAX_BATCH=1 (what batching adds, apart from the other optimisations); single-request latency;
how long the engine's thread is busy outside pipeline calls per image (the GPU's idle time), with
pictures finished on it and on finishing threads; the FLOPs of one image, derived from the model's
configuration at the run's size; and the share of the device's dense fp16 peak.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.models import dense_fp16_peak, flops_per_image  # noqa: E402
from bot.engine.executor import LocalExecutor  # noqa: E402
from bot.engine.models import FAMILIES, ModelSpec, describe  # noqa: E402
from bot.engine.types import GenerationRequest, GenerationResult  # noqa: E402
from bot.engine.worker import EngineTimes, Worker, WorkerConfig  # noqa: E402

PROMPTS = ("a lighthouse at dusk", "a red fox in the snow", "a bowl of ramen, studio light",
           "an astronaut riding a horse")


MODELS = ("sd15", "sdxl", "flux-schnell", "flux-dev", "sd35", "sd35-medium")
# The tiny model `--smoke` runs in place of each
SMOKE_SOURCES = {"sd15": "tiny", "sdxl": "tiny", "flux-schnell": "tiny-flux",
                 "flux-dev": "tiny-flux", "sd35": "tiny-sd3", "sd35-medium": "tiny-sd3"}


def requests(count: int, users: int, side: int, steps: int, model: str, sampler: str,
             guidance: float = 7.0, tag: str = "job") -> list[GenerationRequest]:
    return [
        GenerationRequest(
            job_id=f"{tag}{i:02d}", user_key=f"user{i % users}", model=model,
            prompt=PROMPTS[i % len(PROMPTS)], negative="", width=side, height=side, steps=steps,
            guidance=guidance, sampler=sampler, seeds=(1000 + i,),
        )
        for i in range(count)
    ]


def build(args: argparse.Namespace) -> tuple[Any, ModelSpec, str]:
    import torch

    if args.smoke:
        from diffusers import AutoPipelineForText2Image

        from bot.engine.tiny import build as build_tiny

        source = SMOKE_SOURCES[args.model]
        folder = build_tiny(source, Path(args.cache))
        pipe = AutoPipelineForText2Image.from_pretrained(folder)
        return pipe, describe(source, source), "cpu"
    from bench.models import flux_pipeline, sd15_pipeline, sd35_pipeline, sdxl_pipeline

    if not torch.cuda.is_available():
        sys.exit("no CUDA GPU here: use --smoke to check the script on the CPU")
    if args.model == "sdxl":
        return (sdxl_pipeline("cuda", torch.float16),
                ModelSpec("sdxl", "random", FAMILIES["sdxl"], sdxl=True), "cuda")
    if args.model.startswith("flux"):
        family = FAMILIES[args.model]
        return (flux_pipeline("cuda", torch.bfloat16, dev=family.name == "flux-dev"),
                ModelSpec(args.model, "random", family), "cuda")
    if args.model.startswith("sd35"):
        medium = args.model == "sd35-medium"
        family = FAMILIES["sd35-medium" if medium else "sd35-large"]
        return (sd35_pipeline("cuda", torch.bfloat16, medium=medium),
                ModelSpec(args.model, "random", family), "cuda")
    spec = ModelSpec("sd15", "random", FAMILIES["sd1"])
    return sd15_pipeline("cuda", torch.float16), spec, "cuda"


def synchronize(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def naive(pipe: Any, batch: list[GenerationRequest], device: str,
          spec: ModelSpec) -> tuple[float, Any]:
    """One plain pipeline call per request, batch 1, one after another; returns the seconds
    and the first picture (the reference the optimised executor must reproduce)."""
    import torch

    pipe.set_progress_bar_config(disable=True)
    # T5 families: the sequence length the engine encodes this prompt at
    extra = {"max_sequence_length": spec.family.sequence} if spec.family.sentences else {}
    first = None
    synchronize(device)
    started = time.perf_counter()
    for request in batch:
        generator = torch.Generator("cpu").manual_seed(request.seeds[0])
        picture = pipe(request.prompt, width=request.width, height=request.height,
                       num_inference_steps=request.steps, guidance_scale=request.guidance,
                       generator=generator, **extra).images[0]
        first = first or picture
    synchronize(device)
    return time.perf_counter() - started, first


def difference(reference: Any, png: bytes) -> float:
    """Mean absolute pixel difference, as a share of the full 0–255 range."""
    import io

    import numpy as np
    from PIL import Image

    ours = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float64)
    return float(np.abs(ours - np.asarray(reference, dtype=np.float64)).mean() / 255)


@dataclass(frozen=True)
class Round:
    """One timed round of the batch through an executor."""

    seconds: float
    first_png: bytes
    engine: EngineTimes  # what the engine's thread did meanwhile


async def through_executor(worker: Worker, spec: ModelSpec, pipe: Any, max_batch: int,
                           batch: list[GenerationRequest], device: str) -> Round:
    """The batch through an executor of `max_batch`, once to warm up on exactly these batch
    shapes, then timed."""

    def factory() -> Worker:
        if spec.name not in worker.specs:
            worker.adopt(spec, pipe)  # prepared (and compiled) once, on the engine's thread
        return worker

    executor = LocalExecutor(factory, max_batch)
    executor.start()
    await executor.ready()
    try:
        await asyncio.gather(*(executor.submit(replace(r, job_id=f"warm-{r.job_id}"))
                               for r in batch))
        synchronize(device)
        before = worker.times
        started = time.perf_counter()
        results: list[GenerationResult] = await asyncio.gather(
            *(executor.submit(request) for request in batch))
        seconds = time.perf_counter() - started
        after = worker.times
    finally:
        await executor.close()
    engine = EngineTimes(after.engine - before.engine, after.pipeline - before.pipeline,
                         after.images - before.images)
    return Round(seconds, results[0].images[0].png, engine)


async def latency(worker: Worker, spec: ModelSpec, pipe: Any, lone: GenerationRequest,
                  repeats: int) -> list[float]:
    executor = LocalExecutor(lambda: worker, 1)
    executor.start()
    await executor.ready()
    seconds = []
    try:
        await executor.submit(replace(lone, job_id="lone-warm-up"))
        for i in range(repeats):
            started = time.perf_counter()
            await executor.submit(replace(lone, job_id=f"lone{i}"))
            seconds.append(time.perf_counter() - started)
    finally:
        await executor.close()
    return seconds


def outside_text(times: EngineTimes) -> str:
    per_image = times.outside / max(1, times.images) * 1000
    share = times.outside / times.engine if times.engine else 0.0
    return f"{per_image:6.1f} ms/image ({share:4.0%} of its busy time)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=MODELS, default="sd15")
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--steps", type=int, help="default: the family's (SD 30, schnell 4…)")
    parser.add_argument("--guidance", type=float, help="default: 7 for SD, else the family's")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--sampler", default="euler")
    parser.add_argument("--offload", choices=("none", "model", "sequential"), default="none",
                        help="the executor's models as SD_OFFLOAD runs them")
    parser.add_argument("--compile", action="store_true", help="torch.compile, like SD_COMPILE=1")
    parser.add_argument("--peak-tflops", type=float, help="the device's dense fp16 peak, where "
                        "the table in bench/models.py does not know it")
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
    family = spec.family
    side = family.native_side
    steps = args.steps or (30 if family.name in ("sd1", "sdxl") else family.steps)
    guidance = args.guidance if args.guidance is not None else (
        7.0 if family.name in ("sd1", "sdxl", "tiny") else family.guidance)
    batch = requests(args.requests, args.users, side, steps, spec.name, args.sampler, guidance)
    lone = replace(batch[0], job_id="lone")
    # (FLUX.1 reads its guidance, in one pass: `flops_per_image` knows)
    flops = flops_per_image(pipe, side, side, steps, guided=guidance > 1,
                            tokens=family.sequence or 77)

    naive(pipe, batch[:1], device, spec)  # warm-up on the shape it is timed on: batch 1
    naive_seconds, reference = naive(pipe, batch, device, spec)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    worker = Worker(WorkerConfig(models=(), device=device, dtype="float16" if device == "cuda"
                                 else "float32", max_batch=args.max_batch, compile=args.compile,
                                 cache_dir=args.cache, offload=args.offload))

    async def rounds() -> tuple[Round, Round, Round, list[float]]:
        batched = await through_executor(worker, spec, pipe, args.max_batch, batch, device)
        worker.finish_on(0)  # as before finishing threads: PNGs and safety check on the engine's
        inline = await through_executor(worker, spec, pipe, args.max_batch, batch, device)
        worker.finish_on(WorkerConfig.finish_threads)
        single = await through_executor(worker, spec, pipe, 1, batch, device)
        lone_seconds = await latency(worker, spec, pipe, lone, 3 if args.smoke else 5)
        return batched, inline, single, lone_seconds

    batched, inline, single, latencies = asyncio.run(rounds())

    images = len(batch)
    naive_rate = images / naive_seconds
    rate, single_rate = images / batched.seconds, images / single.seconds
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    offload = f", SD_OFFLOAD={args.offload}" if args.offload != "none" else ""
    print(f"device: {name}; model: {spec.name} ({family.label}, random weights, "
          f"{str(pipe.dtype).removeprefix('torch.')}), {side}×{side}, {steps} steps, CFG "
          f"{guidance:g}, {images} single-image requests from {args.users} users, "
          f"MAX_BATCH={args.max_batch}{', compiled' if args.compile else ''}{offload}")
    print(f"naive (one call per request):  {naive_rate:7.2f} images/s  ({naive_seconds:.2f} s)")
    print(f"atelier executor (batched):    {rate:7.2f} images/s  ({batched.seconds:.2f} s)")
    print(f"executor with MAX_BATCH=1:     {single_rate:7.2f} images/s  "
          f"({single.seconds:.2f} s)")
    print(f"ratio:                         {rate / naive_rate:7.2f}×  (batching alone: "
          f"{rate / single_rate:.2f}×; the rest without batching: "
          f"{single_rate / naive_rate:.2f}×)")
    print(f"single request latency:        {statistics.median(latencies):7.3f} s median "
          f"(min {min(latencies):.3f} s)")
    print(f"same seed vs plain pipeline:   {difference(reference, batched.first_png):7.2%} mean "
          "absolute pixel difference")
    print(f"engine thread outside pipeline calls: before {outside_text(inline.engine)} "
          "(pictures finished on it)")
    print(f"                                      after  {outside_text(batched.engine)} "
          "(finished on finishing threads)")
    print(f"FLOPs per image: {flops.formula}")
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**30
        print(f"peak GPU memory (executor):     {peak:7.1f} GiB")
        tflops = args.peak_tflops or dense_fp16_peak(name)
        achieved = rate * flops.total / 1e12
        if tflops is None:
            print(f"share of dense fp16 peak:      unknown for {name} ({achieved:.0f} TFLOP/s "
                  "achieved; give --peak-tflops)")
        else:
            print(f"share of dense fp16 peak:      {achieved / tflops:7.1%} "
                  f"({achieved:.0f} of {tflops:.0f} TFLOP/s, {name})")
    else:
        print("share of dense fp16 peak:      n/a on the CPU")


if __name__ == "__main__":
    main()
