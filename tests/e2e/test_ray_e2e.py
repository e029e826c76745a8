"""End-to-end tests of the other e2e modules, unchanged, with EXECUTOR=ray on a local Ray.

Each imported test runs here against a bot whose executor is `RayExecutor` with two CPU workers
(one for the tests that need a job to wait behind a running one). The `atelier` fixture below
replaces the e2e one for this module only."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.double import DiscordDouble
from tests.e2e.conftest import (
    Atelier,
    bot_env,
    finished,
    image_size,
    pixels,
    running_atelier,
    settings_for,
)
from tests.e2e.test_imagine import (  # noqa: F401  (collected again here, on Ray)
    test_buttons_work_after_a_restart,
    test_cancel_stops_a_running_job,
    test_every_job_and_image_is_in_the_database,
    test_imagine_answers_with_a_grid_its_seeds_and_buttons,
    test_placeholder_shows_queue_position_then_progress,
    test_queue_limit_per_user,
    test_same_seed_gives_the_same_pixels,
    test_u_posts_one_image_with_its_parameters,
    test_v_makes_variations_of_one_image,
)
from tests.e2e.test_info import (  # noqa: F401
    info,
    test_info_shows_the_models_and_the_engine,
    test_info_shows_your_place_in_the_queue,
)

ray = pytest.importorskip("ray")

from tests.engine.test_ray_executor import start_ray_once  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.ray]

# These tests make a job wait behind a running one: with a second worker free, it would not wait.
ONE_WORKER = {
    "test_info_shows_your_place_in_the_queue",
    "test_placeholder_shows_queue_position_then_progress",
}


@pytest.fixture(scope="session")
def ray_cluster(request: pytest.FixtureRequest) -> None:
    start_ray_once(request)


@pytest_asyncio.fixture
async def atelier(discord_double: DiscordDouble, data_dir: Path, ray_cluster: None,
                  request: pytest.FixtureRequest) -> AsyncIterator[Atelier]:
    workers = 1 if request.node.originalname in ONE_WORKER else 2
    settings = settings_for(discord_double, data_dir, executor="ray", ray_workers=workers)
    async with running_atelier(discord_double, settings) as runner:
        yield runner


PROMPT = "a slow fox --seed 42 --steps 100 --n 2"


async def test_info_lists_the_workers_and_says_when_one_is_lost(atelier: Atelier) -> None:
    host = socket.gethostname()
    fields = await info(atelier)
    assert fields["Device"] == "cpu · float32"
    assert fields["Workers"].splitlines() == [
        "2 of 2 up",
        f"`ray-1` {host} · cpu · tiny · 0 jobs — ready",
        f"`ray-2` {host} · cpu · tiny · 0 jobs — ready",
    ]

    handle = await atelier.imagine(PROMPT)
    assert atelier.bot is not None
    executor = atelier.bot.executor
    await atelier.double.wait_for(lambda: any(w.state == "busy" for w in executor.workers()), 30)
    await asyncio.sleep(0.5)  # into the batch
    [busy] = [w for w in executor.workers() if w.state == "busy"]
    assert busy.pid is not None
    os.kill(busy.pid, signal.SIGKILL)

    # meanwhile the bot goes on with one worker, and /info says so
    for _ in range(300):
        workers = (await info(atelier))["Workers"].splitlines()
        if workers[0] == "1 of 2 up":
            break
        await asyncio.sleep(0.05)
    assert workers[0] == "1 of 2 up"
    assert f"`{busy.name}` {host} · cpu · tiny · 0 jobs — restarting" in workers

    # the job is not lost: it ran again elsewhere, with the same seeds and the same pictures
    lost = await finished(handle, 120)
    again = await finished(await atelier.imagine(PROMPT, user=atelier.double.bob), 120)
    assert (pixels(lost.attachment_bytes()) == pixels(again.attachment_bytes())).all()
    await atelier.double.wait_for(lambda: all(w.alive for w in executor.workers()), 120)
    assert (await info(atelier))["Workers"].splitlines()[0] == "2 of 2 up"


async def test_python_m_bot_on_its_own_ray_stops_it_cleanly(
        discord_double: DiscordDouble, data_dir: Path, tmp_path: Path) -> None:
    env = bot_env(discord_double, data_dir, EXECUTOR="ray", RAY_WORKERS="2")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        await discord_double.wait_for_commands(60)
        await discord_double.wait_ready(60)
        message = await finished(await discord_double.slash(
            "imagine", {"prompt": "a red fox --ar 3:2 --seed 42"}, user=discord_double.alice), 120)
        assert image_size(message.attachment_bytes()) == (320, 208)
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(process.communicate(), 120)
    log = output.decode()
    assert process.returncode == 0, log
    assert re.search(r"Ray started here: 2 (CPU|GPU) workers", log), log
    # the Ray it started went with it: no process of that Ray session is left
    session = re.compile(rf"session_\S+_{process.pid}\b")
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert not [line for line in ps.splitlines() if session.search(line)], ps
