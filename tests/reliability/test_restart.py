"""Jobs survive the process: SIGKILL mid-batch, SIGTERM, expired tokens across restarts, results
that can never be shown."""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path
from typing import Any

import discord
import pytest

from tests.double import DiscordDouble, InteractionHandle, Message
from tests.e2e.conftest import Atelier, finished, image_size, rows, settings_for
from tests.reliability.conftest import BotProcess, FlakyEngine

EDIT = r"^/webhooks/\d+/[^/]+/messages/\d+$"

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
    await discord_double.wait_for(lambda: query(
        data_dir, "SELECT delivered_at FROM jobs WHERE prompt = 'bob waits'")[0][0], 120)
    [job] = query(data_dir, "SELECT * FROM jobs WHERE prompt = 'bob waits'")
    channel_post = discord_double.message(job["message_id"])
    assert job["status"] == "done" and channel_post.interaction_metadata is None
    assert channel_post.content.startswith(f"**bob waits** — <@{discord_double.bob.id}> · ")
    assert channel_post.button_labels == [["U1", "U2", "🔄"], ["V1", "V2"]]
    assert image_size(channel_post.attachment_bytes()) == (256, 128)
    # bob is notified once, by the result; his old placeholder says where the job went
    pings = [m for m in discord_double.channel_messages(discord_double.channel,
                                                        include_deleted=True)
             if discord_double.bob.id in m.pinged_user_ids]
    assert pings == [channel_post]
    original = await bob.original()
    assert original.content.endswith("\n-# continued in a new message below")
    assert original.buttons == [] and original.attachments == []


def channel_posts(double: DiscordDouble) -> list[Message]:
    """Every message the bot posted in #general itself (not as an interaction's answer),
    deleted ones too."""
    return [m for m in double.channel_messages(double.channel, include_deleted=True)
            if m.interaction_metadata is None and m.author_id == double.bot_user.id]


async def test_a_restart_loop_pings_the_author_once(
        discord_double: DiscordDouble, data_dir: Path, flaky_engine: FlakyEngine) -> None:
    double = discord_double
    atelier = Atelier(double, settings_for(double, data_dir))
    await atelier.start(wait_ready=False)
    try:
        handle = await atelier.imagine("a patient fox --seed 5", count=1)
        response = await handle.original()
        await response.wait_until(lambda m: "(retrying)" in m.content, 30)
        double.expire(handle)  # the job is older than its interaction's 15 minutes now

        for _ in range(3):
            await atelier.restart(wait_ready=False)
            # The job, queued again, shows in a channel message of its own: posted by the
            # first start, edited by the others.
            [placeholder] = await double.wait_for(lambda: channel_posts(double), 30)
            await placeholder.wait_until(lambda m: m.content.endswith(
                "\nQueued — position 1 · the image engine is starting (retrying)"), 30)
            assert placeholder.button_labels == [["Cancel"]]
            assert placeholder.pinged_user_ids == []
            [job] = rows(atelier, "SELECT message_id, interaction_token FROM jobs")
            assert job["message_id"] == placeholder.id and job["interaction_token"] is None
            # the interaction's own message says where the job went, without buttons
            assert response.content.endswith("\n-# continued in a new message below")
            assert response.buttons == [] and response.pinged_user_ids == []

        flaky_engine.broken = False
        await atelier.restart()
        result = await double.wait_for(lambda: next(
            (m for m in channel_posts(double) if " · job `" in m.content), None), 60)
        alice = double.alice.id
        assert result.content.startswith(f"**a patient fox** — <@{alice}> · seed 5 · job `")
        assert result.attachments and result.button_labels == [["U1", "🔄"], ["V1"]]
        await double.wait_for(lambda: rows(atelier, "SELECT delivered_at FROM jobs")[0][0], 30)

        everything = double.channel_messages(double.channel, include_deleted=True)
        assert [m for m in everything if alice in m.pinged_user_ids] == [result]
        assert [m.id for m in channel_posts(double)] == [placeholder.id, result.id]
        assert placeholder.deleted  # the result replaced it
        live = [m for m in everything if not m.deleted]
        assert [m for m in live if m.buttons and m is not result] == []
        [job] = rows(atelier, "SELECT * FROM jobs")
        assert (job["status"], job["message_id"], job["delivery_attempts"]) == (
            "done", result.id, 1)
    finally:
        await atelier.stop()


async def test_a_crash_between_posting_and_saving_posts_once(
        bot_process: BotProcess, discord_double: DiscordDouble, data_dir: Path) -> None:
    double = discord_double
    await bot_process.start()
    handle = await double.slash("imagine", {"prompt": "a slow heron --steps 150 --seed 3 --n 1"},
                                user=double.alice)
    response = await handle.original(30)
    await response.wait_until(lambda m: "\nstep " in m.content, 60)
    # The job moves to a message of its own; Discord makes it but is slow to answer, and the
    # process dies before it has the new message's id.
    stall = double.fail("POST", r"^/channels/\d+/messages$", status=None, delay=3, times=1,
                        late_answer=True)
    double.expire(handle)
    [first] = await double.wait_for(lambda: channel_posts(double), 60)
    assert stall.hits == 1
    await bot_process.stop(signal.SIGKILL)  # while the answer is on its way
    [job] = query(data_dir, "SELECT message_id FROM jobs")
    assert job["message_id"] == response.id  # never saved

    await bot_process.start()
    await double.wait_for(lambda: query(data_dir, "SELECT delivered_at FROM jobs")[0][0], 120)
    [job] = query(data_dir, "SELECT * FROM jobs")
    # The post repeated after the restart is answered with the first message, whether that was a
    # placeholder (then replaced by the result) or, on a busy machine, already the result.
    result = double.message(job["message_id"])
    assert result.attachments and " · job `" in result.content
    assert [m.id for m in channel_posts(double) if not m.deleted] == [result.id]
    assert first.id == result.id or first.deleted
    pinged = [m for m in double.channel_messages(double.channel, include_deleted=True)
              if double.alice.id in m.pinged_user_ids]
    assert pinged == [result]


async def test_a_result_stored_while_its_placeholder_was_posted_replaces_it(
        bot_process: BotProcess, discord_double: DiscordDouble, data_dir: Path) -> None:
    double = discord_double
    await bot_process.start()
    handle = await double.slash("imagine", {"prompt": "a slow egret --steps 150 --seed 4 --n 1"},
                                user=double.alice)
    await handle.original(30)
    # The token expires before the first step: the job moves to a placeholder in the channel,
    # which is made but answered so late that the pictures are stored meanwhile, and the
    # process dies before it learns the placeholder's id.
    double.fail("POST", r"^/channels/\d+/messages$", status=None, delay=50, times=1,
                late_answer=True)
    double.expire(handle)
    [placeholder] = await double.wait_for(lambda: channel_posts(double), 60)
    await double.wait_for(lambda: query(data_dir, "SELECT status FROM jobs")[0][0] == "done", 60)
    await bot_process.stop(signal.SIGKILL)
    assert " · job `" not in placeholder.content and not placeholder.pinged_user_ids

    await bot_process.start()
    await double.wait_for(lambda: query(data_dir, "SELECT delivered_at FROM jobs")[0][0], 60)
    [job] = query(data_dir, "SELECT * FROM jobs")
    result = double.message(job["message_id"])
    assert result.attachments and " · job `" in result.content
    assert placeholder.deleted
    assert [m.id for m in channel_posts(double) if not m.deleted] == [result.id]
    pinged = [m for m in double.channel_messages(double.channel, include_deleted=True)
              if double.alice.id in m.pinged_user_ids]
    assert pinged == [result]


@pytest.mark.parametrize(("fault", "why"), [
    ("channel deleted", "404 Unknown Channel (10003)"),
    ("no access", "403 Missing Access (50001)"),
])
async def test_a_result_that_can_never_be_shown_is_given_up(
        atelier: Atelier, fault: str, why: str) -> None:
    double = atelier.double
    handle = await atelier.imagine("a lost fox --seed 8", count=1, steps=40)
    placeholder = await handle.original()
    await placeholder.wait_until(lambda m: not m.loading, 30)
    refusal = double.fail("PATCH", EDIT, status=403, times=None,
                          body={"message": "Missing Permissions", "code": 50013})
    await double.wait_for(lambda: rows(
        atelier, "SELECT delivery_attempts FROM jobs")[0][0] == 1, 30)
    assert atelier.bot is not None
    await atelier.bot.jobs.wait_idle()
    refusal.cancel()

    # by the next start the token has expired, and the channel is gone or closed to the bot
    double.expire(handle)
    if fault == "channel deleted":
        await double.delete_channel(double.channel)
    else:
        double.set_permission_overwrite(double.channel, double.bot_user,
                                        deny=discord.Permissions(view_channel=True).value)
    await atelier.restart()
    await double.wait_for(lambda: rows(atelier, "SELECT delivery_error FROM jobs")[0][0], 30)
    [job] = rows(atelier, "SELECT * FROM jobs")
    assert (job["status"], job["delivered_at"]) == ("done", None)  # made, kept, not shown
    assert (job["delivery_attempts"], job["delivery_error"]) == (2, why)

    tried = len(double.requests)
    bot = await atelier.restart()
    await bot.jobs.wait_idle()
    assert [r for r in double.requests[tried:] if "/messages" in r.path] == []
    assert rows(atelier, "SELECT delivery_attempts FROM jobs")[0][0] == 2


async def test_a_result_is_tried_at_most_ten_times(atelier: Atelier) -> None:
    double = atelier.double
    handle = await atelier.imagine("a shy fox --seed 9", count=1, steps=40)
    placeholder = await handle.original()
    await placeholder.wait_until(lambda m: not m.loading, 30)
    refusal = double.fail("PATCH", EDIT, status=403, times=None,
                          body={"message": "Missing Permissions", "code": 50013})
    await double.wait_for(lambda: rows(
        atelier, "SELECT delivery_attempts FROM jobs")[0][0] == 1, 30)
    assert atelier.bot is not None
    await atelier.bot.jobs.wait_idle()
    refusal.cancel()
    await atelier.stop()
    # as if nine more starts had each failed to show it
    db = sqlite3.connect(atelier.settings.database_path)
    with db:
        db.execute("UPDATE jobs SET delivery_attempts = 10")
    db.close()

    tried = len(double.requests)
    await atelier.start()
    await double.wait_for(lambda: rows(atelier, "SELECT delivery_error FROM jobs")[0][0], 30)
    [job] = rows(atelier, "SELECT * FROM jobs")
    assert (job["delivery_error"], job["delivered_at"]) == ("not delivered after 10 attempts", None)
    assert [r for r in double.requests[tried:] if "/messages" in r.path] == []


async def test_an_edit_left_queued_runs_after_a_restart_with_its_seeds_and_mask(
        discord_double: DiscordDouble, data_dir: Path, flaky_engine: FlakyEngine) -> None:
    import numpy as np

    from tests.e2e.conftest import button, pixels, posted

    double = discord_double
    flaky_engine.broken = False
    atelier = Atelier(double, settings_for(double, data_dir))
    await atelier.start()
    try:
        grid = await finished(await atelier.imagine("a quiet pond --seed 12 --n 1"))
        picture = await posted(await double.click(grid, button(grid, "U1")))
        original = pixels(picture.attachment_bytes())

        flaky_engine.broken = True  # the next start cannot build its engine for a while
        await atelier.restart(wait_ready=False)
        panel = await posted(await double.click(picture, button(picture, "Vary (Region)")))
        [menu] = panel.selects
        await (await double.select(panel, menu["custom_id"], ["9"])).response()
        await panel.wait_until(lambda m: "Cells chosen: 9" in m.content)
        form = await double.click(panel, panel.buttons[0][0].custom_id or "")
        await form.response()
        handle = await double.submit_modal(form.modal["custom_id"], {"prompt": "a quiet pond"})
        placeholder = await handle.original(30)
        await placeholder.wait_until(lambda m: "(retrying)" in m.content, 30)
        [job] = rows(atelier, "SELECT * FROM jobs WHERE kind = 'region'")
        assert job["status"] == "queued" and job["mask_image"] is not None

        flaky_engine.broken = False
        await atelier.restart()  # the start-up sweep must keep the queued job's mask
        result = await finished(handle, 60)
        seeds = f"seeds {job['seed']}–{job['seed'] + 3}"
        assert seeds in result.content  # the seeds saved before the restart
        [done] = rows(atelier, "SELECT * FROM jobs WHERE kind = 'region'")
        assert (done["status"], done["mask_image"]) == ("done", job["mask_image"])
        redrawn = np.zeros((128, 128), dtype=bool)
        redrawn[85 - 8:, 85 - 8:] = True  # cell 9 and the band beside it
        first = pixels(result.attachment_bytes())[:128, :128]
        assert np.abs(first[~redrawn] - original[~redrawn]).max() <= 2
        assert np.abs(first[85:, 85:] - original[85:, 85:]).mean() > 10
    finally:
        await atelier.stop()
