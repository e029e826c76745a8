"""`/recall` end to end: an old result posted again with working buttons, its autocomplete, and
server scoping."""

from __future__ import annotations

import time

import pytest

from tests.double import Channel, InteractionHandle, Member
from tests.e2e.conftest import (
    Atelier,
    button,
    finished,
    image_size,
    job_id_of,
    pixels,
    posted,
    rows,
)
from tests.e2e.test_history import CHECKERBOARD, colour, seed_job, seed_jobs
from tests.storage.factories import make_job

pytestmark = pytest.mark.e2e

ROW1 = ["U1", "U2", "U3", "U4", "🔄"]
ROW2 = ["V1", "V2", "V3", "V4"]


async def recall(atelier: Atelier, job: str, user: Member | None = None,
                 channel: Channel | None = None) -> InteractionHandle:
    return await atelier.double.slash("recall", {"job": job}, user=user, channel=channel)


async def test_recall_posts_the_grid_publicly_with_working_buttons(atelier: Atelier) -> None:
    double = atelier.double
    original = await finished(await atelier.imagine("a red fox --ar 3:2 --seed 42"))
    job_id = job_id_of(original)

    handle = await recall(atelier, job_id, user=double.bob)
    response = await handle.response()
    assert not response.ephemeral
    recalled = await finished(handle)
    assert recalled.id != original.id and not recalled.ephemeral
    assert recalled.content == original.content  # `**a red fox** — @alice · seeds 42–45 · job …`
    assert recalled.button_labels == [ROW1, ROW2]
    assert recalled.attachments[0].filename == f"atelier_{job_id}.png"
    grid = recalled.attachment_bytes()
    assert image_size(grid) == (320, 208)
    assert (pixels(grid) == pixels(original.attachment_bytes())).all()

    pressed = await double.click(recalled, button(recalled, "U1"), user=double.bob)
    single = await posted(pressed)
    assert single.content.endswith(f"· job `{job_id}` · image 1")
    assert (pixels(single.attachment_bytes()) == pixels(grid)[:104, :160]).all()
    # the original result is untouched, and the job keeps pointing at it
    assert rows(atelier, "SELECT message_id FROM jobs WHERE id = ?", job_id)[0][0] == original.id


async def test_a_single_picture_is_posted_alone(atelier: Atelier) -> None:
    job = await seed_job(atelier, "one lonely lighthouse", 3, count=1)
    recalled = await finished(await recall(atelier, job.id))
    assert recalled.button_labels == [["U1", "🔄"], ["V1"]]
    picture = pixels(recalled.attachment_bytes())
    assert picture.shape == (128, 128, 3) and (picture == colour(3)).all()


async def test_flagged_pictures_are_veiled_where_the_channel_is_not_nsfw(
        atelier: Atelier) -> None:
    double = atelier.double
    job = await seed_job(atelier, "flagged", 1, flagged=True)  # made in #general

    veiled = await posted(await recall(atelier, job.id))
    assert veiled.attachments[0].filename == f"SPOILER_atelier_{job.id}.png"
    assert "veiled by the safety checker" in veiled.content
    assert pixels(veiled.attachment_bytes())[:128, :128].std() < 30

    shown = await posted(await recall(atelier, job.id, channel=double.nsfw_channel))
    assert shown.attachments[0].filename == f"atelier_{job.id}.png"
    assert (pixels(shown.attachment_bytes())[:128, :128] == CHECKERBOARD).all()


async def test_job_ids_are_read_leniently(atelier: Atelier) -> None:
    job = await seed_job(atelier, "a red fox", 1)
    recalled = await finished(await recall(atelier, f"  `{job.id.upper()}` "))
    assert job_id_of(recalled) == job.id


async def test_unknown_and_foreign_ids_get_the_same_answer(atelier: Atelier) -> None:
    double = atelier.double
    alices = await seed_job(atelier, "alice's fox", 1)
    in_dm = await seed_job(atelier, "alice in private", 2, dm=True)

    cases = [
        ("zzzzzzzz", double.alice, double.channel),
        (alices.id, double.eve, double.other_channel),
        (in_dm.id, double.alice, double.channel),
        (alices.id, double.bob, double.dm_channel(double.bob)),
    ]
    for job_id, user, channel in cases:
        response = await (await recall(atelier, job_id, user=user, channel=channel)).response()
        assert response.ephemeral
        assert response.data["content"] == f"No job `{job_id}` in this server."
    assert not [m for m in double.messages if not m.ephemeral]

    recalled = await finished(await recall(atelier, in_dm.id,
                                           channel=double.dm_channel(double.alice)))
    assert job_id_of(recalled) == in_dm.id


async def test_unfinished_jobs_cannot_be_recalled(atelier: Atelier) -> None:
    assert atelier.bot is not None
    queued = await atelier.bot.repo.insert_job(make_job(
        guild_id=atelier.double.guild.id, channel_id=atelier.double.channel.id,
        user_id=atelier.double.alice.id, prompt="still queued", created_at=time.time()))
    assert queued is not None
    response = await (await recall(atelier, queued.id)).response()
    assert response.ephemeral
    assert response.data["content"] == f"Job `{queued.id}` has not finished yet."


async def test_autocomplete_offers_this_servers_jobs_newest_first(atelier: Atelier) -> None:
    double = atelier.double
    jobs = await seed_jobs(atelier, 30, "a red fox")
    long = await seed_job(atelier, "a lighthouse " + "very " * 40 + "tall", 40)
    await seed_job(atelier, "a red fox far away", 41, other_guild=True)

    choices = await double.autocomplete("recall", focused="job")
    assert len(choices) == 25
    assert choices[0] == {"name": f"{long.id} · {long.prompt}"[:99] + "…", "value": long.id}
    assert [choice["value"] for choice in choices[1:]] == [job.id for job in reversed(jobs)][:24]
    assert choices[1]["name"] == f"{jobs[-1].id} · a red fox number 29"
    assert all(len(choice["name"]) <= 100 for choice in choices)

    found = await double.autocomplete("recall", {"job": "lightho"}, focused="job")
    assert [choice["value"] for choice in found] == [long.id]
    by_id = await double.autocomplete("recall", {"job": jobs[7].id[:5]}, focused="job")
    assert by_id[0]["value"] == jobs[7].id
    matches = await double.autocomplete("recall", {"job": "red fox number 7"}, focused="job")
    assert matches[0]["value"] == jobs[7].id

    hostile = await double.autocomplete("recall", {"job": 'NEAR("red* (fox'}, focused="job")
    assert all(choice["value"] in {job.id for job in jobs} for choice in hostile)


async def test_autocomplete_shows_other_servers_nothing(atelier: Atelier) -> None:
    double = atelier.double
    alices = await seed_jobs(atelier, 3, "a red fox")
    eves = await seed_job(atelier, "a red fox of eve's", 9, other_guild=True)
    for typed in ("", "red fox", alices[0].id[:4], alices[0].id):
        choices = await double.autocomplete("recall", {"job": typed}, focused="job",
                                            user=double.eve, channel=double.other_channel)
        assert {choice["value"] for choice in choices} <= {eves.id}, typed
