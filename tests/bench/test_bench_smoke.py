"""The GPU benchmark still runs (tiny model, CPU): its figures are printed, not asserted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_bench_smoke_prints_its_figures(tmp_path: Path, tiny_model_dir: Path) -> None:
    (tmp_path / "tiny").symlink_to(tiny_model_dir, target_is_directory=True)
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu.py"), "--smoke", "--cache", str(tmp_path)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    lines = result.stdout
    for label in ("naive (one call per request):", "atelier executor (batched):",
                  "executor with MAX_BATCH=1:", "ratio:", "single request latency:",
                  "same seed vs plain pipeline:", "engine thread outside pipeline calls: before",
                  "share of dense fp16 peak:"):
        assert label in lines, lines
    difference = float(lines.split("same seed vs plain pipeline:")[1].split("%")[0])
    assert difference < 2.0  # the executor's pictures are the plain pipeline's
    # the FLOPs of an image, derived from the tiny model's own configuration at 128²
    assert ("FLOPs per image: 2 FLOP/MAC × (2 (guidance) × 4 steps × " in lines
            and "GMAC (UNet at 16×16 latents, 77 tokens) + " in lines
            and "GMAC (VAE decode at 128×128)) = " in lines), lines


def test_dense_fp16_peaks_by_device_name() -> None:
    from bench.models import dense_fp16_peak

    assert dense_fp16_peak("NVIDIA H100 80GB HBM3") == 989.4
    assert dense_fp16_peak("NVIDIA H100 PCIe") == 756.5
    assert dense_fp16_peak("NVIDIA H200") == 989.4
    assert dense_fp16_peak("NVIDIA A100-SXM4-80GB") == 312.0
    assert dense_fp16_peak("NVIDIA L40S") == 362.05
    assert dense_fp16_peak("NVIDIA GeForce RTX 4090") == 165.2
    assert dense_fp16_peak("Tesla T4") is None


def test_sd15_flops_per_image_match_the_published_count() -> None:
    """SD 1.5 at 512², 30 guided steps: about 0.4 TMAC per UNet call, 1.26 TMAC to decode, so
    50.7 TFLOP an image."""
    import torch

    from bench.models import flops_per_image, sd15_pipeline

    pipe = sd15_pipeline("meta", torch.float16)  # the configuration, without weights
    flops = flops_per_image(pipe, 512, 512, 30, guided=True)
    assert round(flops.unet_macs / 1e9) == 402 and round(flops.vae_macs / 1e9) == 1257
    assert flops.calls == 60 and round(flops.total / 1e12, 1) == 50.7
    assert flops.formula.endswith("= 50.7 TFLOP")


def test_loop_bench_runs_end_to_end() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "loop.py"), "--jobs", "1", "--interactions", "4",
         "--startup-seconds", "2"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    for label in ("acknowledgement in the first seconds after a start: p50",
                  "acknowledgement while switching to another model: p50",
                  "acknowledgement while generating: p50", "largest event-loop lag meanwhile:",
                  "bot overhead per job:"):
        assert label in result.stdout, result.stdout


def test_gallery_bench_runs_end_to_end() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gallery.py"), "--jobs", "300", "--runs", "2"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    for label in ("filled 300 jobs", "grid, page 1", "search 'fox'", "a job's page",
                  "slowest p50 of a gallery page:"):
        assert label in result.stdout, result.stdout
    pages = [line.split() for line in result.stdout.splitlines() if line.startswith("grid, page 1")]
    assert pages[0][-2] == "200"  # signed in: the page itself, not a redirect


def test_flux_and_sd35_are_built_from_their_published_configurations() -> None:
    """`bench/gpu.py --model flux-schnell|sd35` builds these on a GPU: here on `meta` (no
    memory), their sizes are the published ones (FLUX.1: a 12B transformer; SD 3.5 Large 8.1B;
    T5 v1.1 XXL's encoder 4.8B), and so is their arithmetic at 1024²."""
    import torch

    from bench.models import flops_per_image, flux_pipeline, parameters, sd35_pipeline

    flux = flux_pipeline("meta", torch.bfloat16)
    billions = {name: round(count / 1e9, 2) for name, count in parameters(flux).items()}
    assert billions == {"transformer": 11.89, "text_encoder": 0.12, "text_encoder_2": 4.76,
                        "vae": 0.08}
    flops = flops_per_image(flux, 1024, 1024, 4, guided=False, tokens=256)
    assert flops.formula.startswith("2 FLOP/MAC × (4 steps × ")
    assert "GMAC (transformer at 128×128 latents, 256 tokens)" in flops.formula
    assert 250 < flops.total / 1e12 < 350  # TFLOP for one 4-step image
    sd35 = {name: round(count / 1e9, 2) for name, count in parameters(
        sd35_pipeline("meta", torch.bfloat16)).items()}
    assert sd35 == {"transformer": 8.06, "text_encoder": 0.12, "text_encoder_2": 0.69,
                    "text_encoder_3": 4.76, "vae": 0.08}
