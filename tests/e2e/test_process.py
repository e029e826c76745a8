"""`python -m bot` as users start it: configuration errors, a real run, a clean SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.double import DiscordDouble
from tests.e2e.conftest import bot_env, finished, image_size, pixels, posted

pytestmark = pytest.mark.e2e



def test_without_a_token_it_says_what_to_set(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "bot"], cwd=tmp_path, env=bot_env(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "DISCORD_TOKEN" in lines[0], result.stderr


def test_a_malformed_setting_is_named_in_one_line(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DISCORD_TOKEN=abc\nMAX_BATCH=lots\n")
    result = subprocess.run([sys.executable, "-m", "bot"], cwd=tmp_path, env=bot_env(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "MAX_BATCH" in lines[0], result.stderr
    assert "abc" not in result.stderr


async def test_an_nvidia_gpu_torch_cannot_use_stops_the_start_in_one_line(
        discord_double: DiscordDouble, data_dir: Path, tmp_path: Path) -> None:
    """A machine whose torch cannot use its GPU (here: a CPU build, and an `nvidia-smi` that
    answers as a driver would) must not quietly run every job on the CPU."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine's torch can use a GPU")
    folder = tmp_path / "bin"
    folder.mkdir()
    smi = folder / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho '| NVIDIA-SMI 535.104.05   Driver Version: 535.104.05   "
                   "CUDA Version: 12.2 |'\n")
    smi.chmod(0o755)
    env = bot_env(discord_double, data_dir, SD_DEVICE="auto",
                  PATH=f"{folder}{os.pathsep}{os.environ['PATH']}")
    result = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "bot"], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("atelier: an NVIDIA GPU is here (driver 535.104.05, CUDA 12.2) but "
                           "torch "), result.stderr
    assert "SD_DEVICE=cpu" in last and "Traceback" not in result.stderr


async def test_python_m_bot_serves_imagine_and_stops_cleanly(
        discord_double: DiscordDouble, data_dir: Path, tmp_path: Path) -> None:
    env = bot_env(discord_double, data_dir, LOG_LEVEL="DEBUG")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        await discord_double.wait_for_commands(60)
        await discord_double.wait_ready(60)
        handle = await discord_double.slash("imagine", {"prompt": "a red fox --ar 3:2 --seed 42"},
                                            user=discord_double.alice)
        message = await finished(handle, 60)
        assert image_size(message.attachment_bytes()) == (320, 208)
        assert message.button_labels[0] == ["U1", "U2", "U3", "U4", "🔄"]
        again = await finished(await discord_double.slash(
            "imagine", {"prompt": "a red fox --ar 3:2 --seed 42"}, user=discord_double.bob), 60)
        assert (pixels(again.attachment_bytes()) == pixels(message.attachment_bytes())).all()
        u1 = await discord_double.click(message, message.buttons[0][0].custom_id or "")
        assert image_size((await posted(u1)).attachment_bytes()) == (160, 104)
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(process.communicate(), 60)
    log = output.decode()
    assert process.returncode == 0, log
    assert discord_double.token not in log
    assert "synced" in log
