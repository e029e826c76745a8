"""NVIDIA GPUs, their driver and torch's CUDA build: which build to install, and why a GPU that
the machine shows may be unusable.

Standard library only: `scripts/torch_index.py` runs this before anything else is installed, to
choose the CUDA build of torch that the driver supports. A torch built for a newer CUDA than the
driver supports sees no GPU at all (`torch.cuda.is_available()` is False), and the engine would
quietly run on the CPU; `unusable_gpu` says why in one line instead."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess

# CUDA builds of torch published at download.pytorch.org/whl/<build>, oldest first.
TORCH_CUDA_BUILDS = ("cu126", "cu128", "cu130")
TORCH_INDEX = "https://download.pytorch.org/whl"
# The oldest Linux driver of each CUDA release (NVIDIA's CUDA Toolkit release notes, table 3).
DRIVER_FOR_CUDA = {(12, 6): "560.28", (12, 8): "570.26", (13, 0): "580.65"}

_CUDA_VERSION = re.compile(r"CUDA Version:\s*(\d+)\.(\d+)")
_DRIVER_VERSION = re.compile(r"Driver Version:\s*([\d.]+)")


class CudaSetupError(Exception):
    """The driver cannot run any CUDA build of torch; the message says what to do."""


def driver_cuda(smi_output: str) -> tuple[int, int] | None:
    """The newest CUDA version the driver supports, from `nvidia-smi`'s header
    (`| NVIDIA-SMI 570.86.15   Driver Version: 570.86.15   CUDA Version: 12.8 |`)."""
    found = _CUDA_VERSION.search(smi_output)
    return (int(found[1]), int(found[2])) if found else None


def driver_version(smi_output: str) -> str | None:
    found = _DRIVER_VERSION.search(smi_output)
    return found[1] if found else None


def build_cuda(build: str) -> tuple[int, int]:
    """`cu128` → (12, 8); `cu130` → (13, 0)."""
    digits = build.removeprefix("cu")
    return int(digits[:-1]), int(digits[-1])


def choose_build(smi_output: str, builds: tuple[str, ...] = TORCH_CUDA_BUILDS) -> str:
    """The newest of `builds` that the driver behind `smi_output` supports."""
    cuda = driver_cuda(smi_output)
    if cuda is None:
        first = smi_output.strip().splitlines()[:1] or ["no output"]
        raise CudaSetupError(
            f"nvidia-smi did not say which CUDA version the driver supports ({first[0]}); is "
            "the NVIDIA driver loaded? Install it, or set TORCH_INDEX to the torch build to use")
    fitting = [build for build in builds if build_cuda(build) <= cuda]
    if not fitting:
        oldest = min(builds, key=build_cuda)
        major, minor = build_cuda(oldest)
        needed = DRIVER_FOR_CUDA.get((major, minor))
        raise CudaSetupError(
            f"the NVIDIA driver ({driver_version(smi_output) or '?'}) supports CUDA "
            f"{cuda[0]}.{cuda[1]}, older than every CUDA build of torch here "
            f"({', '.join(builds)}): update the driver"
            + (f" to {needed} or newer" if needed else ""))
    return max(fitting, key=build_cuda)


@functools.cache
def nvidia_smi() -> str | None:
    """What `nvidia-smi` prints (its errors included), or None where it is not installed."""
    command = shutil.which("nvidia-smi")
    if command is None:
        return None
    try:
        done = subprocess.run([command], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as error:
        return f"nvidia-smi failed: {error}"
    return done.stdout + done.stderr


def unusable_gpu(cuda_available: bool, torch_version: str, torch_cuda: str | None,
                 smi_output: str | None) -> str | None:
    """One line saying why torch cannot use the NVIDIA GPU this machine has; None where CUDA
    works or the machine shows no NVIDIA GPU (no `nvidia-smi`)."""
    if cuda_available or smi_output is None:
        return None
    cuda = driver_cuda(smi_output)
    if cuda is None:
        first = (smi_output.strip().splitlines() or ["no output"])[0]
        return (f"nvidia-smi is installed but does not answer ({first}): the NVIDIA driver is "
                "not loaded, so torch sees no GPU")
    driver = f"driver {driver_version(smi_output) or '?'}, CUDA {cuda[0]}.{cuda[1]}"
    if torch_cuda is None:
        return (f"an NVIDIA GPU is here ({driver}) but torch {torch_version} is a CPU build: "
                "reinstall with `make clean install`")
    built = tuple(int(part) for part in torch_cuda.split(".")[:2])
    if built > cuda:
        return (f"an NVIDIA GPU is here ({driver}) but torch {torch_version} is built for CUDA "
                f"{torch_cuda}, newer than the driver supports: reinstall with `make clean "
                "install` (it picks the build the driver supports), or update the driver")
    return (f"an NVIDIA GPU is here ({driver}) but torch {torch_version} (CUDA {torch_cuda}) "
            "cannot use it: check `nvidia-smi` and CUDA_VISIBLE_DEVICES")
