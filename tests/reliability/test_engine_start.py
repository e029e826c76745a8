"""An image engine that cannot start at once: jobs wait, saying so, and fail only in the end."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.engine.executor import START_FAILED
from tests.double import DiscordDouble
from tests.e2e.conftest import Atelier, finished, job_id_of, rows, settings_for
from tests.reliability.conftest import FlakyEngine

pytestmark = pytest.mark.e2e

RETRYING = "\nQueued — position 1 · the image engine is starting (retrying)"


@contextlib.asynccontextmanager
async def unready_atelier(double: DiscordDouble, data_dir: Path,
                          **settings: Any) -> AsyncIterator[Atelier]:
    """The bot, started without waiting for its image engine; stopped afterwards."""
    runner = Atelier(double, settings_for(double, data_dir, **settings))
    await runner.start(wait_ready=False)
    try:
        yield runner
    finally:
        await runner.stop()
    assert not double.server_errors, double.server_errors


async def info_fields(atelier: Atelier) -> dict[str, str]:
    handle = await atelier.double.slash("info", user=atelier.double.alice)
    [embed] = (await handle.original()).embeds
    return {field["name"]: field["value"] for field in embed["fields"]}


async def test_an_engine_that_fails_to_start_twice_runs_the_queued_job(
        discord_double: DiscordDouble, data_dir: Path, flaky_engine: FlakyEngine) -> None:
    async with unready_atelier(discord_double, data_dir) as atelier:
        handle = await atelier.imagine("a patient heron --seed 4", count=1)
        placeholder = await handle.original()
        await placeholder.wait_until(lambda m: m.content.endswith(RETRYING), 30)
        assert placeholder.button_labels == [["Cancel"]]
        workers = (await info_fields(atelier))["Workers"].splitlines()
        assert workers[0] == "0 of 1 up · the image engine is starting (retrying after a failure)"
        assert workers[1].endswith("— retrying")
        await discord_double.wait_for(lambda: flaky_engine.failures >= 2, 30)

        flaky_engine.broken = False
        message = await finished(handle, 60)
        assert message.content.startswith(f"**a patient heron** — <@{discord_double.alice.id}>"
                                          " · seed 4 · job `")
        assert message.attachments and message.button_labels == [["U1", "🔄"], ["V1"]]
        [job] = rows(atelier, "SELECT status, error FROM jobs")
        assert (job["status"], job["error"]) == ("done", None)
        assert (await info_fields(atelier))["Workers"].splitlines()[0] == "1 of 1 up"


async def test_jobs_fail_with_a_short_reason_once_the_start_timeout_is_over(
        discord_double: DiscordDouble, data_dir: Path, flaky_engine: FlakyEngine,
        caplog: pytest.LogCaptureFixture) -> None:
    async with unready_atelier(discord_double, data_dir) as atelier:
        handle = await atelier.imagine("a patient heron", count=1)
        placeholder = await handle.original()
        await placeholder.wait_until(lambda m: m.content.endswith(RETRYING), 30)
        # The next start gives its engine a second: the job, resumed at once, waits that long.
        await atelier.restart(wait_ready=False, engine_start_timeout=1.0)
        message = await finished(handle, 60)
        [job] = rows(atelier, "SELECT id, status, error FROM jobs")
        assert message.content == (f"**a patient heron** — <@{discord_double.alice.id}>\n"
                                   f"Failed — {START_FAILED} · job `{job['id']}`")
        assert message.buttons == []
        assert (job["status"], job["error"]) == ("failed", START_FAILED)
        assert flaky_engine.failures >= 3  # at least once more after the restart
        assert "10.7.0.3" in caplog.text  # the detail is for the log only

        workers = (await info_fields(atelier))["Workers"]
        assert workers.splitlines()[0] == (
            "0 of 1 up · the image engine is not running; the bot's log says why")
        later = await finished(await atelier.imagine("a later heron", count=1), 30)
        assert later.content.endswith(f"\nFailed — {START_FAILED} · job `{job_id_of(later)}`")
