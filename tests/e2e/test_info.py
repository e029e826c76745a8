"""`/info` end to end: models, device, the queue and the caller's place in it, privately."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.double import Message
from tests.e2e.conftest import Atelier, button, finished, rows

pytestmark = pytest.mark.e2e


async def info(atelier: Atelier, user: Any = None) -> dict[str, str]:
    """Run `/info` and return its fields by name, checking that nobody else sees them."""
    handle = await atelier.double.slash("info", user=user or atelier.double.alice)
    response = await handle.response()
    assert response.type == 4 and response.ephemeral
    message = await handle.original()
    assert message.ephemeral
    [embed] = message.embeds
    return {field["name"]: field["value"] for field in embed["fields"]}


async def test_info_shows_the_models_and_the_engine(atelier: Atelier) -> None:
    fields = await info(atelier)
    assert fields["Models"] == (
        "**tiny** (default) — tiny (random, for tests) · 128×128 · 30 steps · CFG 7 · euler")
    assert fields["Device"] == "cpu · float32"
    assert fields["Queue"] == "empty"
    assert fields["Speed"] == "no images yet"
    assert fields["Jobs done"] == "0"
    assert re.fullmatch(r"(\d+m )?\d+s", fields["Uptime"])
    assert fields["Your jobs"] == "You have no jobs queued or running."

    await finished(await atelier.imagine("a red fox --n 2"))
    fields = await info(atelier)
    assert fields["Jobs done"] == "1"
    assert re.fullmatch(r"\d+\.\d\d s per image \(recent\)", fields["Speed"])


async def wait_for(message: Message, text: str) -> None:
    await message.wait_until(lambda m: text in m.content, timeout=30)


async def cancel(atelier: Atelier, *messages: Message) -> None:
    """Press `Cancel` on each job, so the long ones do not hold up the test."""
    for message in messages:
        await atelier.double.click(message, button(message, "Cancel"))
        await wait_for(message, "Cancelled")


async def test_info_shows_your_place_in_the_queue(atelier: Atelier) -> None:
    long = await atelier.imagine("a slow fox", steps=150)
    long_message = await long.original()
    await wait_for(long_message, "step ")
    waiting = await atelier.imagine("a quick cat --steps 10 --n 1")
    waiting_message = await waiting.original()
    await wait_for(waiting_message, "Queued — position 1")
    [long_id, waiting_id] = [row[0] for row in rows(
        atelier, "SELECT id FROM jobs ORDER BY created_at")]

    fields = await info(atelier)
    assert fields["Queue"] == "2 jobs (1 running, 1 waiting)"
    lines = fields["Your jobs"].splitlines()
    assert lines[0] == f"`{long_id}` a slow fox — running"
    assert lines[1] == f"`{waiting_id}` a quick cat — position 1"
    assert lines[2] == "_at most 3 queued or running at a time_"

    # someone else sees the queue, but none of alice's jobs as theirs
    bobs = await info(atelier, user=atelier.double.bob)
    assert bobs["Queue"] == "2 jobs (1 running, 1 waiting)"
    assert bobs["Your jobs"] == "You have no jobs queued or running."

    await cancel(atelier, waiting_message, long_message)


async def test_info_hides_what_your_jobs_elsewhere_are(atelier: Atelier) -> None:
    double = atelier.double
    alice = double.alice
    lounge = await double.add_guild("Lounge", members=[alice])
    long = await atelier.imagine("a slow fox", steps=150)
    long_message = await long.original()
    await wait_for(long_message, "step ")
    elsewhere = await double.slash("imagine", {"prompt": "a secret plan --n 1"}, user=alice,
                                   channel=lounge.channels[0])
    elsewhere_message = await elsewhere.original()
    await wait_for(elsewhere_message, "Queued — position 1")

    lines = (await info(atelier)).get("Your jobs", "").splitlines()
    assert lines[1] == "a job in another server or DM — position 1"
    assert "secret" not in "\n".join(lines)

    await cancel(atelier, elsewhere_message, long_message)
