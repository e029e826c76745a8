"""Faults, injected: a bot process killed mid-batch, a flaky Discord, a failing GPU."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from bot.engine.executor import Executor
from bot.engine.worker import Worker, WorkerConfig
from tests.double import DiscordDouble
from tests.e2e.conftest import (
    atelier,  # noqa: F401  (the in-process bot, for fault tests)
    bot_env,
)


class BotProcess:
    """`python -m bot` against the double, as an operator runs it."""

    def __init__(self, double: DiscordDouble, data_dir: Path, cwd: Path, **env: str) -> None:
        self.double = double
        self.env = bot_env(double, data_dir, LOG_LEVEL="DEBUG",
                           ATELIER_GUILD_READY_TIMEOUT="0.05", **env)
        self.cwd = cwd
        self.process: asyncio.subprocess.Process | None = None
        self.logs: list[str] = []
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        ready = self.double.gateway.ready_count
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", cwd=self.cwd, env=self.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        self._reader = asyncio.create_task(self._read(self.process))
        await self.double.wait_ready(60, count=ready + 1)

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        async for line in process.stdout:
            self.logs.append(line.decode(errors="replace"))

    async def stop(self, signum: int = signal.SIGTERM, timeout: float = 60) -> int:
        assert self.process is not None
        process, self.process = self.process, None
        if process.returncode is None:
            process.send_signal(signum)
        code = await asyncio.wait_for(process.wait(), timeout)
        if self._reader is not None:
            await self._reader
        session = self.double.gateway.current
        if session is not None:
            await self.double.wait_for(
                lambda: session.invalidated or session.connection is None, 10,
                description="the double to notice the bot is gone")
        return code

    @property
    def log(self) -> str:
        return "".join(self.logs)


@pytest_asyncio.fixture
async def bot_process(discord_double: DiscordDouble, data_dir: Path,
                      tmp_path: Path) -> AsyncIterator[BotProcess]:
    process = BotProcess(discord_double, data_dir, tmp_path)
    try:
        yield process
    finally:
        if process.process is not None:
            await process.stop(signal.SIGKILL)


class FlakyEngine:
    """Builds the bot's image worker, but fails to while `broken`: a GPU node that is not up
    yet, a model file that cannot be read for a moment. The error names a host and a path,
    which must reach the log and never a user."""

    error = "cannot reach ray://10.7.0.3:10001 to load /srv/atelier/models/secret.safetensors"

    def __init__(self) -> None:
        self.broken = True
        self.failures = 0  # counted on the engine's thread

    def __call__(self, config: WorkerConfig) -> Worker:
        if self.broken:
            self.failures += 1
            raise RuntimeError(self.error)
        return Worker(config)


@pytest.fixture
def flaky_engine(monkeypatch: pytest.MonkeyPatch) -> FlakyEngine:
    """The bot's workers come from a `FlakyEngine`, tried again 0.05, 0.1, 0.2… s apart."""
    engine = FlakyEngine()
    monkeypatch.setattr("bot.client.Worker", engine)
    monkeypatch.setattr(Executor, "start_backoff", 0.05)
    return engine


@pytest.fixture(scope="session")
def flagging_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """The tiny pipeline with a tiny real safety checker that flags every picture."""
    import torch
    from diffusers import StableDiffusionPipeline
    from diffusers.pipelines.stable_diffusion.safety_checker import (
        StableDiffusionSafetyChecker,
    )
    from transformers import CLIPConfig, CLIPImageProcessor

    small = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4,
             "num_hidden_layers": 1}
    config = CLIPConfig(text_config={**small, "vocab_size": 100},
                        vision_config={**small, "image_size": 32, "patch_size": 8},
                        projection_dim=32)
    torch.manual_seed(0)
    checker = StableDiffusionSafetyChecker(config)
    with torch.no_grad():
        checker.concept_embeds_weights.fill_(-10.0)  # every concept scores over its threshold
    extractor = CLIPImageProcessor(size={"shortest_edge": 32},
                                   crop_size={"height": 32, "width": 32})
    tiny = StableDiffusionPipeline.from_pretrained(tiny_model_dir)
    pipe = StableDiffusionPipeline(**{**tiny.components, "safety_checker": checker,
                                      "feature_extractor": extractor},
                                   requires_safety_checker=True)
    folder = tmp_path_factory.mktemp("models") / "flagging"
    pipe.save_pretrained(folder)
    return folder
