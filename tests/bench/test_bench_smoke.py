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
    for label in ("naive (one call per request):", "atelier executor (batched):", "ratio:",
                  "single request latency:", "same seed vs plain pipeline:"):
        assert label in lines, lines
    difference = float(lines.split("same seed vs plain pipeline:")[1].split("%")[0])
    assert difference < 2.0  # the executor's pictures are the plain pipeline's


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
