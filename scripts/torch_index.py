"""Print the package index of the torch build for this machine's NVIDIA driver.

    python scripts/torch_index.py                 # https://download.pytorch.org/whl/cu128
    python scripts/torch_index.py cu126 cu128     # choosing among these builds only

`make install` runs it on machines with `nvidia-smi`, before anything is installed (standard
library only). Where the driver supports no CUDA build of torch, or `nvidia-smi` does not answer,
it prints one line saying what to do and exits with status 1.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.engine.cuda import (  # noqa: E402
    TORCH_CUDA_BUILDS,
    TORCH_INDEX,
    CudaSetupError,
    choose_build,
    nvidia_smi,
)


def index_url(smi_output: str | None, builds: tuple[str, ...] = TORCH_CUDA_BUILDS) -> str:
    """The index of the newest CUDA build of torch among `builds` that the driver supports."""
    if smi_output is None:
        raise CudaSetupError("nvidia-smi is not installed: there is no NVIDIA driver here")
    return f"{TORCH_INDEX}/{choose_build(smi_output, builds)}"


def main(argv: list[str]) -> int:
    builds = tuple(argv) or TORCH_CUDA_BUILDS
    try:
        print(index_url(nvidia_smi(), builds))
    except CudaSetupError as error:
        print(f"torch: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
