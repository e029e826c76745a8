"""Choosing torch's CUDA build from the driver, and saying why a GPU cannot be used."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.engine.cuda import (
    CudaSetupError,
    choose_build,
    driver_cuda,
    nvidia_smi,
    unusable_gpu,
)

ROOT = Path(__file__).resolve().parents[2]


def smi(driver: str, cuda: str) -> str:
    """The header `nvidia-smi` prints."""
    rule = "+" + "-" * 89 + "+\n"
    return (
        rule
        + f"| NVIDIA-SMI {driver}              Driver Version: {driver}      "
          f"CUDA Version: {cuda}     |\n"
        + rule
        + "|   0  NVIDIA H100 80GB HBM3          On  |   00000000:19:00.0 Off |       0 |\n"
    )


NO_DRIVER = ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make "
             "sure that the latest NVIDIA driver is installed and running.\n")


@pytest.mark.parametrize(("cuda", "build"), [("12.6", "cu126"), ("12.7", "cu126"),
                                             ("12.8", "cu128"), ("12.9", "cu128"),
                                             ("13.0", "cu130"), ("13.2", "cu130")])
def test_the_newest_build_the_driver_supports(cuda: str, build: str) -> None:
    assert choose_build(smi("570.86.15", cuda)) == build


def test_a_driver_older_than_every_build_is_refused_naming_the_driver_to_install() -> None:
    with pytest.raises(CudaSetupError) as refused:
        choose_build(smi("535.104.05", "12.2"))
    message = str(refused.value)
    assert "535.104.05" in message and "CUDA 12.2" in message
    assert "update the driver to 560.28 or newer" in message


def test_a_driver_that_does_not_answer_is_refused() -> None:
    with pytest.raises(CudaSetupError, match="is the NVIDIA driver loaded"):
        choose_build(NO_DRIVER)


def test_driver_cuda_reads_the_header() -> None:
    assert driver_cuda(smi("580.65.06", "13.0")) == (13, 0)
    assert driver_cuda(NO_DRIVER) is None


def test_why_a_gpu_goes_unused() -> None:
    header = smi("535.104.05", "12.2")
    assert unusable_gpu(True, "2.13.0+cu128", "12.8", header) is None
    assert unusable_gpu(False, "2.13.0+cpu", None, None) is None  # no NVIDIA GPU here
    cpu_build = unusable_gpu(False, "2.13.0+cpu", None, header)
    assert cpu_build is not None and "torch 2.13.0+cpu is a CPU build" in cpu_build
    too_new = unusable_gpu(False, "2.13.0", "13.0", header)
    assert too_new is not None
    assert "built for CUDA 13.0, newer than the driver supports" in too_new
    assert "driver 535.104.05, CUDA 12.2" in too_new
    no_driver = unusable_gpu(False, "2.13.0", "13.0", NO_DRIVER)
    assert no_driver is not None and "the NVIDIA driver is not loaded" in no_driver


@pytest.fixture
def fake_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An `nvidia-smi` on PATH that prints what the test writes into it (no GPU here)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    script = folder / "nvidia-smi"
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    nvidia_smi.cache_clear()
    yield script
    nvidia_smi.cache_clear()


def write_smi(script: Path, output: str, status: int = 0) -> None:
    script.write_text(f"#!/bin/sh\ncat <<'END'\n{output}END\nexit {status}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


def run_script(*builds: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "torch_index.py"), *builds],
                          capture_output=True, text=True, timeout=60)


def test_torch_index_script_prints_the_index(fake_nvidia_smi: Path) -> None:
    write_smi(fake_nvidia_smi, smi("570.86.15", "12.8"))
    done = run_script()
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "https://download.pytorch.org/whl/cu128"
    assert run_script("cu126").stdout.strip() == "https://download.pytorch.org/whl/cu126"


def test_torch_index_script_refuses_in_one_line(fake_nvidia_smi: Path) -> None:
    write_smi(fake_nvidia_smi, smi("535.104.05", "12.2"))
    done = run_script()
    assert done.returncode == 1 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("torch: the NVIDIA driver (535.104.05)")
    write_smi(fake_nvidia_smi, NO_DRIVER, status=9)
    assert "is the NVIDIA driver loaded" in run_script().stderr


def test_auto_does_not_fall_back_to_the_cpu_beside_an_unusable_gpu(
        fake_nvidia_smi: Path) -> None:
    """With an NVIDIA GPU in sight that this machine's torch cannot use, `auto` says so."""
    import torch

    from bot.engine.types import EngineError
    from bot.engine.worker import resolve_device

    if torch.cuda.is_available():
        pytest.skip("this machine's torch can use a GPU")
    write_smi(fake_nvidia_smi, smi("535.104.05", "12.2"))
    with pytest.raises(EngineError) as refused:
        resolve_device("auto")
    assert "an NVIDIA GPU is here (driver 535.104.05, CUDA 12.2)" in str(refused.value)
    assert "set SD_DEVICE=cpu to run on the CPU" in str(refused.value)
    assert resolve_device("cpu") == "cpu"  # asked for: fine


def test_without_an_nvidia_gpu_auto_is_the_cpu() -> None:
    from bot.engine.worker import resolve_device

    if nvidia_smi() is not None:
        pytest.skip("this machine has nvidia-smi")
    assert resolve_device("auto") == "cpu"
