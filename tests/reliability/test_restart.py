"""Jobs survive the process: SIGKILL mid-batch, SIGTERM, expired tokens across a restart."""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.double import DiscordDouble, InteractionHandle, Message
from tests.e2e.conftest import finished, image_size
from tests.reliability.conftest import BotProcess

pytestmark = pytest.mark.e2e


def query(data_dir: Path, sql: str, *params: Any) -> list[sqlite3.Row]:
    db = sqlite3.connect(data_dir / "atelier.db")
    db.row_factory = sqlite3.Row
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


async def start_three_jobs(double: DiscordDouble) -> list[InteractionHandle]:
    """A long job running, and two more from other users waiting behind it."""
    running = await double.slash("imagine", {"prompt": "a long one --steps 150 --seed 10"},
                                 user=double.alice)
    waiting = [
        await double.slash("imagine", {"prompt": "bob waits --seed 20 --n 2"}, user=double.bob),
        await double.slash("imagine", {"prompt": "mod waits --seed 30 --n 1"}, user=double.mod),
    ]
    message = await running.original(30)
    await message.wait_until(lambda m: "\nstep " in m.content, 60)
    return [running, *waiting]


async def test_sigkill_mid_batch_loses_nothing(bot_process: BotProcess,
                                               discord_double: DiscordDouble,
                                               data_dir: Path) -> None:
    await bot_process.start()
    handles = await start_three_jobs(discord_double)
    assert await bot_process.stop(signal.SIGKILL) == -signal.SIGKILL

    before = {row["id"]: row for row in query(data_dir, "SELECT * FROM jobs")}
    assert sorted(row["status"] for row in before.values()) == ["queued", "queued", "running"]

    await bot_process.start()
    results: list[Message] = [await finished(handle, 120) for handle in handles]
    for handle, message in zip(handles, results, strict=True):
        assert message.id == (await handle.original()).id  # the same placeholder, now a result
        assert message.attachments and message.button_labels, bot_process.log[-3000:]

    await discord_double.wait_for(lambda: all(
        row["delivered_at"] for row in query(data_dir, "SELECT delivered_at FROM jobs")), 30)
    after = {row["id"]: row for row in query(data_dir, "SELECT * FROM jobs")}
    assert after.keys() == before.keys()  # no job lost, none duplicated
    for job_id, row in after.items():
        assert row["status"] == "done" and row["delivered_at"] is not None
        assert row["seed"] == before[job_id]["seed"]  # run again with the same seeds
        images = query(data_dir, "SELECT idx, seed FROM images WHERE job_id = ? ORDER BY idx",
                       job_id)
        assert [(i["idx"], i["seed"]) for i in images] == [
            (i, row["seed"] + i) for i in range(row["count"])]
    assert sum(1 for m in discord_double.messages if not m.ephemeral) == 3
    assert discord_double.token not in bot_process.log


async def test_sigterm_finishes_the_running_batch_and_keeps_the_queue(
        bot_process: BotProcess, discord_double: DiscordDouble, data_dir: Path) -> None:
    await bot_process.start()
    running, *waiting = await start_three_jobs(discord_double)
    assert await bot_process.stop(signal.SIGTERM) == 0

    done = await running.original()
    assert "job `" in done.content and "\n" not in done.content  # finished before exiting
    statuses = sorted(row["status"] for row in query(data_dir, "SELECT status FROM jobs"))
    assert statuses == ["done", "queued", "queued"]
    assert "stopping" in bot_process.log.lower()

    await bot_process.start()
    for handle in waiting:
        message = await finished(handle, 120)
        assert message.attachments
    assert sorted(row["status"] for row in query(data_dir, "SELECT status FROM jobs")) == [
        "done", "done", "done"]


async def test_after_the_token_expires_results_go_to_the_channel(
        bot_process: BotProcess, discord_double: DiscordDouble, data_dir: Path) -> None:
    await bot_process.start()
    running, bob, mod = await start_three_jobs(discord_double)
    await bot_process.stop(signal.SIGKILL)
    discord_double.expire(bob)  # bob's interaction is older than 15 minutes now

    await bot_process.start()
    await finished(running, 120)
    await finished(mod, 120)
    channel_post = await discord_double.wait_for(lambda: next(
        (m for m in discord_double.channel_messages(discord_double.channel)
         if "bob waits" in m.content and m.interaction_metadata is None), None), 120)
    await channel_post.wait_until(lambda m: "job `" in m.content, 120)
    assert channel_post.content.startswith(f"**bob waits** — <@{discord_double.bob.id}> · ")
    assert channel_post.mentioned_user_ids == [discord_double.bob.id]
    assert channel_post.button_labels == [["U1", "U2", "🔄"], ["V1", "V2"]]
    assert image_size(channel_post.attachment_bytes()) == (256, 128)
    await discord_double.wait_for(lambda: query(
        data_dir, "SELECT delivered_at FROM jobs WHERE prompt = 'bob waits'")[0][0], 30)
    [job] = query(data_dir, "SELECT * FROM jobs WHERE prompt = 'bob waits'")
    assert job["status"] == "done" and job["message_id"] == channel_post.id
