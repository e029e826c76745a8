"""Running the real bot, with the tiny model, against the loopback Discord double."""

from __future__ import annotations

import contextlib
import io
import os
import re
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest_asyncio
from PIL import Image

from bot.client import AtelierBot
from bot.config import Settings
from tests.double import DiscordDouble, InteractionHandle, Message, running_bot

ROOT = Path(__file__).resolve().parents[2]


def bot_env(double: DiscordDouble | None = None, data_dir: Path | None = None,
            **extra: str) -> dict[str, str]:
    """The environment of a `python -m bot` process: ours without any Atelier setting, then
    pointed at `double` with the tiny model in `data_dir`, then `extra`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DISCORD_", "SD_", "DATA_DIR", "MAX_", "LOG_LEVEL", "RAY_",
                                "WEB_", "PUBLIC_URL"))}
    env["PYTHONPATH"] = str(ROOT)
    env["WEB_PORT"] = "0"  # bots started side by side must not all want the gallery's port
    if double is not None:
        env.update(DISCORD_TOKEN=double.token, DISCORD_API_BASE=double.api_base,
                   DISCORD_GATEWAY_URL=double.gateway_url, SD_MODEL="tiny")
    if data_dir is not None:
        env["DATA_DIR"] = str(data_dir)
    return {**env, **extra}


def settings_for(double: DiscordDouble, data_dir: Path, **overrides: Any) -> Settings:
    settings = Settings(
        discord_token=double.token,
        sd_model="tiny",
        data_dir=data_dir,
        discord_api_base=double.api_base,
        discord_gateway_url=double.gateway_url,
        guild_ready_timeout=0.05,
        web_port=0,  # the gallery's tests give it a free port of its own
    )
    return replace(settings, **overrides)


class Atelier:
    """The bot under test, restartable against the same double and data."""

    def __init__(self, double: DiscordDouble, settings: Settings) -> None:
        self.double = double
        self.settings = settings
        self.bot: AtelierBot | None = None
        self._running: contextlib.AbstractAsyncContextManager[Any] | None = None

    async def start(self, wait_ready: bool = True) -> AtelierBot:
        """Start the bot; with `wait_ready`, also wait until its image engine has started."""
        bot = AtelierBot(self.settings)
        self._running = running_bot(self.double, bot, wait_for_commands=True)
        await self._running.__aenter__()
        self.bot = bot
        await bot.wait_until_ready()  # its servers have arrived
        if wait_ready:
            await bot.executor.ready()
        return bot

    async def stop(self) -> None:
        if self._running is not None:
            running, self._running = self._running, None
            await running.__aexit__(None, None, None)

    async def restart(self, wait_ready: bool = True, **overrides: Any) -> AtelierBot:
        await self.stop()
        self.settings = replace(self.settings, **overrides)
        return await self.start(wait_ready)

    async def imagine(self, prompt: str, user: Any = None, **options: Any) -> InteractionHandle:
        return await self.double.slash("imagine", {"prompt": prompt, **options},
                                       user=user or self.double.alice)


@contextlib.asynccontextmanager
async def running_atelier(double: DiscordDouble, settings: Settings) -> AsyncIterator[Atelier]:
    """The bot with `settings`, stopped afterwards; the double must not have failed itself."""
    runner = Atelier(double, settings)
    await runner.start()
    try:
        yield runner
    finally:
        await runner.stop()
    assert not double.server_errors, double.server_errors


@pytest_asyncio.fixture
async def atelier(discord_double: DiscordDouble, data_dir: Path) -> AsyncIterator[Atelier]:
    async with running_atelier(discord_double, settings_for(discord_double, data_dir)) as runner:
        yield runner


async def finished(handle: InteractionHandle, timeout: float = 30) -> Message:
    """The job's message once it shows a result, a cancellation or a failure."""
    message = await handle.original(timeout)
    await message.wait_until(lambda m: " · job `" in m.content.split("\n")[0]
                             or "\nCancelled" in m.content or "\nFailed" in m.content, timeout)
    return message


async def posted(handle: InteractionHandle, timeout: float = 30) -> Message:
    """The message a press answered with, once it shows more than "thinking…"."""
    message = await handle.original(timeout)
    return await message.wait_until(lambda m: not m.loading, timeout)


async def withdrawn(atelier: Atelier, handle: InteractionHandle, timeout: float = 30) -> str:
    """The private answer of a command that deferred publicly and then took its placeholder
    back (SPEC §6: a file that turns out bad); asserts that nothing public is left."""
    response = await handle.response(timeout)
    assert response.type == 5 and not response.ephemeral
    placeholder = await handle.original(timeout)
    await placeholder.wait_until(lambda m: m.deleted, timeout)
    answer = await atelier.double.wait_for(
        lambda: next((m for m in handle.followups if m.ephemeral), None), timeout,
        description="a private answer")
    assert placeholder.loading and not placeholder.content  # it never showed anything
    assert all(m.ephemeral for m in handle.followups)
    return str(answer.content)


def stored_files(atelier: Atelier) -> list[Path]:
    """Every file in the image store, temporary ones included."""
    root = Path(atelier.settings.images_dir)
    return sorted(path for path in root.rglob("*") if path.is_file())


def referenced_files(atelier: Atelier) -> list[Path]:
    """The files of the image store that a row refers to (pictures, starting pictures)."""
    root = Path(atelier.settings.images_dir)
    found = [root / row["path"] for row in rows(atelier, "SELECT path FROM images")]
    for row in rows(atelier, "SELECT init_image FROM jobs WHERE init_image IS NOT NULL"):
        sha = row["init_image"]
        found.extend(root.glob(f"{sha[:2]}/{sha}.*"))
    return sorted(set(found))


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(np.int16)


def png_info(data: bytes) -> dict[str, Any]:
    return dict(Image.open(io.BytesIO(data)).info)


def image_size(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


def job_id_of(message: Message) -> str:
    """The job id shown on a result message."""
    match = re.search(r"job `([a-z0-9]{8})`", message.content)
    assert match, message.content
    return match[1]


def rows(atelier: Atelier, sql: str, *params: Any) -> list[sqlite3.Row]:
    """Query the bot's database file directly, as an operator would."""
    db = sqlite3.connect(atelier.settings.database_path)
    db.row_factory = sqlite3.Row
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


def button(message: Message, label: str) -> str:
    """The custom id of the button labelled `label` on `message`."""
    for row in message.buttons:
        for item in row:
            if item.text == label:
                assert item.custom_id is not None
                return item.custom_id
    raise AssertionError(f"no button {label!r} in {message.button_labels}")
