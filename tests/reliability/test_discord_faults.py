"""Delivery that outlives Discord's hiccups: 5xx, 429, stalls, expired tokens, upload limits."""

from __future__ import annotations

import pytest

from bot.delivery import Delivery
from tests.e2e.conftest import Atelier, finished, image_size, job_id_of, posted, rows

pytestmark = pytest.mark.e2e

EDIT = r"^/webhooks/\d+/[^/]+/messages/\d+$"


async def delivered(atelier: Atelier, job_id: str) -> None:
    await atelier.double.wait_for(lambda: rows(
        atelier, "SELECT delivered_at FROM jobs WHERE id = ?", job_id)[0][0], 30)


async def test_server_errors_are_retried_until_the_result_is_shown(atelier: Atelier) -> None:
    fault = atelier.double.fail("PATCH", EDIT, status=500, times=3)
    message = await finished(await atelier.imagine("a red fox --seed 1", count=1), 60)
    assert fault.hits == 3
    assert message.attachments and message.button_labels == [["U1", "🔄"], ["V1"]]
    await delivered(atelier, job_id_of(message))


async def test_rate_limits_are_waited_out(atelier: Atelier) -> None:
    fault = atelier.double.fail("PATCH", EDIT, status=429, retry_after=0.8, times=1)
    message = await finished(await atelier.imagine("a red fox", count=1), 60)
    assert fault.hits == 1 and message.attachments
    edits = [r for r in atelier.double.requests if r.method == "PATCH"]
    limited = next(i for i, r in enumerate(edits) if r.status == 429)
    assert edits[limited + 1].time - edits[limited].time >= 0.7  # retry_after was honoured


async def test_a_stalled_upload_is_abandoned_and_tried_again(
        atelier: Atelier, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Delivery, "upload_timeout", 1.0)
    monkeypatch.setattr(Delivery, "backoff", 0.1)
    handle = await atelier.imagine("a red fox", count=1, steps=5)
    placeholder = await handle.original()
    await placeholder.wait_until(lambda m: not m.loading, 30)
    fault = atelier.double.fail("PATCH", EDIT, status=None, delay=5, times=1)
    message = await finished(handle, 60)
    assert fault.hits == 1 and message.attachments
    await delivered(atelier, job_id_of(message))


async def test_an_expired_token_sends_the_result_to_the_channel(atelier: Atelier) -> None:
    handle = await atelier.imagine("a red fox --seed 3", steps=60)
    placeholder = await handle.original()
    await placeholder.wait_until(lambda m: not m.loading, 30)
    atelier.double.expire(handle)
    post = await atelier.double.wait_for(lambda: next(
        (m for m in atelier.double.channel_messages(atelier.double.channel)
         if m.id != placeholder.id and "job `" in m.content), None), 60)
    alice = atelier.double.alice.id
    assert post.content.startswith(f"**a red fox** — <@{alice}> · seeds 3–6 · job `")
    assert post.mentioned_user_ids == [alice]
    assert post.button_labels[0] == ["U1", "U2", "U3", "U4", "🔄"]
    await delivered(atelier, job_id_of(post))
    [job] = rows(atelier, "SELECT message_id FROM jobs")
    assert job["message_id"] == post.id


async def test_pictures_over_the_upload_limit_are_re_encoded(atelier: Atelier) -> None:
    atelier.double.attachment_size_limit = 20_000  # a grid PNG here is about 100 kB
    message = await finished(await atelier.imagine("a red fox --seed 5"), 60)
    [attachment] = message.attachments
    assert attachment.filename.endswith(".webp")
    assert len(attachment.data) <= 20_000
    assert image_size(attachment.data) == (256, 256)
    # U1 fits its picture to the limit too; the lossless PNG stays in the store
    click = await atelier.double.click(message, message.buttons[0][0].custom_id or "")
    single = await posted(click)
    assert single.attachments[0].filename.endswith(".webp")
    assert len(single.attachments[0].data) <= 20_000
    atelier.double.attachment_size_limit = 25 * 1024 * 1024
    click = await atelier.double.click(message, message.buttons[0][0].custom_id or "")
    assert (await posted(click)).attachments[0].filename.endswith(".png")


async def test_a_refused_upload_is_retried_smaller(atelier: Atelier) -> None:
    atelier.double.reject_uploads_over(30_000)
    message = await finished(await atelier.imagine("a red fox --seed 6"), 60)
    [attachment] = message.attachments
    assert len(attachment.data) <= 30_000 and attachment.filename.endswith(".webp")


async def test_a_result_discord_refuses_stays_done_and_is_delivered_after_a_restart(
        atelier: Atelier) -> None:
    handle = await atelier.imagine("a red fox --seed 8", count=1, steps=40)
    placeholder = await handle.original()
    await placeholder.wait_until(lambda m: not m.loading, 30)
    refusal = atelier.double.fail("PATCH", EDIT, status=403, times=None,
                                  body={"message": "Missing Permissions", "code": 50013})
    await atelier.double.wait_for(lambda: rows(
        atelier, "SELECT status FROM jobs")[0][0] == "done", 30)
    await atelier.double.wait_for(lambda: refusal.hits >= 1, 30)
    [job] = rows(atelier, "SELECT status, delivered_at FROM jobs")
    assert job["status"] == "done" and job["delivered_at"] is None  # made, not lost, not shown
    refusal.cancel()
    await atelier.restart()
    message = await finished(handle, 60)
    assert message.id == placeholder.id and message.attachments
    await delivered(atelier, job_id_of(message))
