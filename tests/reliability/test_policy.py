"""Server policy: allowed channels, blocked words, a rate limit, NSFW pictures, and secrets."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import Atelier, finished, job_id_of, pixels, posted, rows

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


async def test_commands_work_only_in_allowed_channels(atelier: Atelier) -> None:
    double = atelier.double
    await atelier.restart(allowed_channels=(double.nsfw_channel.id,))
    refused = await atelier.imagine("a fox")
    answer = await refused.response()
    assert answer.ephemeral
    assert answer.data["content"] == f"Atelier works in <#{double.nsfw_channel.id}> on this server."
    accepted = await double.slash("imagine", {"prompt": "a fox", "count": 1}, user=double.alice,
                                  channel=double.nsfw_channel)
    assert (await finished(accepted)).attachments
    # direct messages are not a server's channel: they still work
    private = await double.slash("imagine", {"prompt": "a fox", "count": 1}, user=double.alice,
                                 channel=double.dm_channel(double.alice))
    assert (await private.response()).type == 5


async def test_blocked_words_are_refused(atelier: Atelier) -> None:
    await atelier.restart(blocked_words=("gore", "blood bath"))
    for prompt in ("a GORE scene", "a scene --no flowers, blood bath"):
        answer = await (await atelier.imagine(prompt)).response()
        assert answer.ephemeral and "a word this server does not allow" in answer.data["content"]
    allowed = await atelier.imagine("a gorey costume", count=1)  # whole words only
    assert (await allowed.response()).type == 5
    assert rows(atelier, "SELECT count(*) FROM jobs")[0][0] == 1


async def test_blocked_words_are_refused_in_disguise(atelier: Atelier) -> None:
    await atelier.restart(blocked_words=("gore", "blood bath"))
    for prompt, negative, word in (
            ("two gores", None, "gore"), ("bloody_gore", None, "gore"), ("ｇｏｒｅ", None, "gore"),
            ("go\u200bre", None, "gore"), ("g.o.r.e", None, "gore"),
            ("a bloodbath", None, "blood bath"), ("a fox", "blood baths", "blood bath")):
        options = {"negative": negative} if negative else {}
        answer = await (await atelier.imagine(prompt, **options)).response()
        assert answer.ephemeral, prompt
        assert answer.data["content"] == (
            f"❌ The prompt contains a word this server does not allow (`{word}`)")
    assert rows(atelier, "SELECT count(*) FROM jobs")[0][0] == 0
    allowed = await atelier.imagine("a gorgeous bath, gory-free class", count=1)
    assert (await allowed.response()).type == 5
    assert rows(atelier, "SELECT count(*) FROM jobs")[0][0] == 1


async def test_quick_iteration_is_not_rate_limited_by_default(atelier: Atelier) -> None:
    """Twelve jobs in well under a minute, one at a time (as `🔄` and `V` presses come): the queue
    limit bounds a user, no per-minute limit refuses them."""
    for i in range(12):
        handle = await atelier.imagine(f"fox {i}", count=1, steps=1)
        assert (await handle.response()).type == 5, i
        await finished(handle)
    assert rows(atelier, "SELECT count(*) FROM jobs WHERE status = 'done'")[0][0] == 12


async def test_a_user_may_start_only_so_many_jobs_a_minute(atelier: Atelier) -> None:
    await atelier.restart(rate_limit_per_minute=2, max_queue_per_user=10)
    for i in range(2):
        assert (await (await atelier.imagine(f"fox {i}", count=1, steps=2)).response()).type == 5
    third = await (await atelier.imagine("fox 3")).response()
    assert third.ephemeral and "at most 2 a minute" in third.data["content"]
    other = await atelier.imagine("bob's fox", count=1, steps=2, user=atelier.double.bob)
    assert (await other.response()).type == 5


async def test_flagged_pictures_are_veiled_outside_nsfw_channels(
        atelier: Atelier, flagging_model_dir: Path) -> None:
    double = atelier.double
    await atelier.restart(sd_model=str(flagging_model_dir))
    veiled = await finished(await atelier.imagine("a fox --seed 9", count=2))
    assert veiled.attachments[0].filename.startswith("SPOILER_")
    assert "images 1, 2 veiled by the safety checker" in veiled.content
    clear = await finished(await double.slash("imagine", {"prompt": "a fox --seed 9", "count": 2},
                                              user=double.alice, channel=double.nsfw_channel))
    assert not clear.attachments[0].filename.startswith("SPOILER_")
    assert "\n" not in clear.content
    veiled_pixels = pixels(veiled.attachment_bytes())
    clear_pixels = pixels(clear.attachment_bytes())
    assert veiled_pixels.shape == clear_pixels.shape
    assert veiled_pixels.std() < clear_pixels.std()  # blurred beyond recognition
    [flags] = rows(atelier, "SELECT group_concat(nsfw) FROM images WHERE job_id = ?",
                   job_id_of(veiled))
    assert flags[0] == "1,1"
    single = await posted(await double.click(veiled, veiled.buttons[0][0].custom_id or ""))
    assert single.attachments[0].filename.startswith("SPOILER_")


async def test_the_token_never_reaches_logs_or_errors(
        atelier: Atelier, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await atelier.restart()
    await finished(await atelier.imagine("a red fox", count=1))
    await (await atelier.imagine("a fox --steps 999")).response()
    atelier.double.fail("PATCH", r"^/webhooks/", status=500, times=1)
    await finished(await atelier.imagine("another fox", count=1), 60)
    token = atelier.double.token
    assert token not in caplog.text
    assert all(token not in m.content for m in atelier.double.messages)
    assert token not in repr(atelier.settings)


async def test_backup_copies_the_live_database(atelier: Atelier, tmp_path: Path) -> None:
    message = await finished(await atelier.imagine("a red fox", count=1))
    target = tmp_path / "backup" / "atelier.db"
    result = subprocess.run(
        [sys.executable, "-m", "bot", "backup", str(target)], cwd=tmp_path, capture_output=True,
        text=True, timeout=60,
        env={"PYTHONPATH": str(ROOT), "DATA_DIR": str(atelier.settings.data_dir),
             "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    copy = sqlite3.connect(target)
    try:
        assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert copy.execute("SELECT id FROM jobs").fetchall() == [(job_id_of(message),)]
    finally:
        copy.close()
