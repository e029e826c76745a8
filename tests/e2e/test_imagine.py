"""`/imagine` end to end: what a user sees in Discord, and what the database keeps."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from tests.double import Message
from tests.e2e.conftest import (
    Atelier,
    button,
    finished,
    image_size,
    job_id_of,
    pixels,
    png_info,
    posted,
    rows,
)

pytestmark = pytest.mark.e2e

ROW1 = ["U1", "U2", "U3", "U4", "🔄"]
ROW2 = ["V1", "V2", "V3", "V4"]


async def test_imagine_answers_with_a_grid_its_seeds_and_buttons(atelier: Atelier) -> None:
    alice = atelier.double.alice
    handle = await atelier.imagine("a red fox --ar 3:2 --seed 42")

    response = await handle.response()
    assert response.type == 5  # deferred: the public "thinking" placeholder
    assert not response.ephemeral
    assert handle.ack_seconds is not None and handle.ack_seconds < 3

    message = await finished(handle)
    job_id = job_id_of(message)
    assert message.content == f"**a red fox** — <@{alice.id}> · seeds 42–45 · job `{job_id}`"
    assert not job_id.isdigit() and len(job_id) == 8
    assert message.button_labels == [ROW1, ROW2]
    assert len(message.attachments) == 1
    grid = message.attachment_bytes(0)
    assert image_size(grid) == (2 * 160, 2 * 104)  # 3:2 on the tiny model's 128² area
    assert png_info(grid)["parameters"].startswith("a red fox\n")
    assert message.mentioned_user_ids == [alice.id]


async def test_every_job_and_image_is_in_the_database(atelier: Atelier) -> None:
    handle = await atelier.imagine("a lighthouse at dusk --seed 7 --steps 12 --cfg 6.5",
                                   negative="fog")
    message = await finished(handle)
    job_id = job_id_of(message)

    await atelier.double.wait_for(lambda: rows(
        atelier, "SELECT delivered_at FROM jobs WHERE id = ?", job_id)[0][0])
    [job] = rows(atelier, "SELECT * FROM jobs WHERE id = ?", job_id)
    assert job["status"] == "done"
    assert job["kind"] == "imagine"
    assert job["guild_id"] == atelier.double.guild.id
    assert job["channel_id"] == atelier.double.channel.id
    assert job["user_id"] == atelier.double.alice.id
    assert (job["prompt"], job["negative"], job["model"]) == ("a lighthouse at dusk", "fog", "tiny")
    assert (job["width"], job["height"], job["steps"], job["guidance"]) == (128, 128, 12, 6.5)
    assert (job["seed"], job["count"]) == (7, 4)
    assert job["message_id"] == message.id
    assert job["interaction_token"] is None  # forgotten once delivered

    images = rows(atelier, "SELECT * FROM images WHERE job_id = ? ORDER BY idx", job_id)
    assert [image["seed"] for image in images] == [7, 8, 9, 10]
    grid = pixels(message.attachment_bytes(0))
    for image in images:
        path = Path(atelier.settings.images_dir) / image["path"]
        data = path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == image["sha256"]
        assert image_size(data) == (128, 128)
        info = png_info(data)["parameters"]
        assert info.splitlines()[:2] == ["a lighthouse at dusk", "Negative prompt: fog"]
        assert f"Seed: {image['seed']}," in info and "Size: 128x128" in info
        assert "Steps: 12," in info and "CFG scale: 6.5" in info and "Model: tiny" in info
        # the grid is the four images, touching, in order
        row, column = divmod(image["idx"], 2)
        cell = grid[row * 128:(row + 1) * 128, column * 128:(column + 1) * 128]
        assert (cell == pixels(data)).all()

    found = rows(atelier, "SELECT rowid FROM jobs_fts WHERE jobs_fts MATCH 'lighthouse'")
    assert len(found) == 1


async def test_same_seed_gives_the_same_pixels(atelier: Atelier) -> None:
    first = await finished(await atelier.imagine("a red fox --ar 3:2 --seed 42"))
    second = await finished(await atelier.imagine("a red fox --ar 3:2 --seed 42",
                                                  user=atelier.double.bob))
    other = await finished(await atelier.imagine("a red fox --ar 3:2 --seed 43"))
    assert (pixels(first.attachment_bytes()) == pixels(second.attachment_bytes())).all()
    assert (pixels(first.attachment_bytes()) != pixels(other.attachment_bytes())).any()


async def test_image_two_alone_is_reproduced_by_seed_plus_one(atelier: Atelier) -> None:
    grid_message = await finished(await atelier.imagine("a red fox --seed 42"))
    alone = await finished(await atelier.imagine("a red fox --seed 43 --n 1"))
    assert alone.content.endswith(f"· seed 43 · job `{job_id_of(alone)}`")
    assert alone.button_labels == [["U1", "🔄"], ["V1"]]
    second_cell = pixels(grid_message.attachment_bytes())[0:128, 128:256]
    # same picture up to floating-point differences between batch shapes (SPEC §5)
    assert abs(second_cell - pixels(alone.attachment_bytes())).max() <= 2


@pytest.mark.parametrize(
    ("count", "size", "labels"),
    [
        (1, (128, 128), [["U1", "🔄"], ["V1"]]),
        (2, (256, 128), [["U1", "U2", "🔄"], ["V1", "V2"]]),
        (3, (256, 256), [["U1", "U2", "U3", "🔄"], ["V1", "V2", "V3"]]),
    ],
)
async def test_grid_layout_follows_the_count(atelier: Atelier, count: int,
                                             size: tuple[int, int],
                                             labels: list[list[str]]) -> None:
    message = await finished(await atelier.imagine("a blue bird", count=count))
    grid = message.attachment_bytes()
    assert image_size(grid) == size
    assert message.button_labels == labels
    if count == 3:
        assert (pixels(grid)[128:, 128:] == 0).all()  # the empty fourth cell stays black


async def test_slash_options_win_over_inline_parameters(atelier: Atelier) -> None:
    message = await finished(await atelier.imagine(
        "a castle --ar 16:9 --seed 1 --n 4 --steps 30", aspect="9:16", seed=5, count=1, steps=8))
    assert image_size(message.attachment_bytes()) == (96, 168)
    [job] = rows(atelier, "SELECT * FROM jobs WHERE id = ?", job_id_of(message))
    assert (job["seed"], job["count"], job["steps"]) == (5, 1, 8)


async def test_em_dash_and_multi_prompt_weights(atelier: Atelier) -> None:
    message = await finished(await atelier.imagine("a cat::2 a dog::-0.5 —ar 16:9 —seed 3"))
    assert message.content.startswith("**a cat::2 a dog::-0.5** — ")
    assert image_size(message.attachment_bytes()) == (2 * 168, 2 * 96)
    plain = await finished(await atelier.imagine("a cat --ar 16:9 --seed 3"))
    assert (pixels(message.attachment_bytes()) != pixels(plain.attachment_bytes())).any()


async def test_bad_input_is_refused_privately_and_leaves_nothing(atelier: Atelier) -> None:
    cases = {
        "a fox --ar 5:1": "at most 4:1",
        "a fox --seed -1": "from 0 to 4294967295",
        "a fox --steps 500": "from 1 to 150",
        "a fox --cfg nan": "from 0 to 30",
        "a fox --n 9": "from 1 to 4",
        "a fox --wat 3": "Unknown parameter `--wat`",
        "a fox --model nope": "Unknown model `nope`. Accepted: tiny",
        "a fox --sampler nope": "Unknown sampler `nope`",
        "a fox --strength 0.5": "only applies when you give an `image`",
        "   --ar 1:1": "The prompt is empty",
    }
    for prompt, expected in cases.items():
        handle = await atelier.imagine(prompt)
        response = await handle.response()
        assert response.type == 4 and response.ephemeral, prompt
        assert expected in response.data["content"], (prompt, response.data["content"])
    assert rows(atelier, "SELECT count(*) FROM jobs")[0][0] == 0
    public = [m for m in atelier.double.messages if not m.ephemeral]
    assert public == []


async def test_u_posts_one_image_with_its_parameters(atelier: Atelier) -> None:
    grid_message = await finished(await atelier.imagine("a red fox --ar 3:2 --seed 42"))
    job_id = job_id_of(grid_message)
    before = list(grid_message.history)

    click = await atelier.double.click(grid_message, button(grid_message, "U2"),
                                       user=atelier.double.bob)
    response = await click.response()
    assert response.type == 5 and not response.ephemeral  # a new public message
    single = await posted(click)
    assert single.id != grid_message.id
    assert single.content == (f"**a red fox** — <@{atelier.double.bob.id}> · seed 43 · "
                              f"job `{job_id}` · image 2")
    # SPEC §3: the picture's buttons, in rows (`Make Square` only when it is not square)
    assert single.button_labels == [
        ["Vary (Subtle)", "Vary (Strong)", "Vary (Region)"],
        ["Zoom Out 2x", "Zoom Out 1.5x", "Custom Zoom", "Make Square"],
        ["⬅️", "➡️", "⬆️", "⬇️"],
        ["Upscale (2x)", "❤️", "🗑️"],
    ]
    data = single.attachment_bytes()
    assert single.attachments[0].filename == f"atelier_{job_id}_2.png"
    assert image_size(data) == (160, 104)
    assert "Seed: 43," in png_info(data)["parameters"]
    assert (pixels(data) == pixels(grid_message.attachment_bytes())[0:104, 160:320]).all()
    assert grid_message.history == before  # the grid's message is not changed


async def test_v_makes_variations_of_one_image(atelier: Atelier) -> None:
    grid_message = await finished(await atelier.imagine("a red fox --seed 42"))
    parent = job_id_of(grid_message)
    click = await atelier.double.click(grid_message, button(grid_message, "V3"),
                                       user=atelier.double.bob)
    response = await click.response()
    assert response.type == 5 and not response.ephemeral
    variation = await finished(click)
    assert variation.id != grid_message.id
    assert variation.button_labels == [ROW1, ROW2]
    assert variation.content.startswith(f"**a red fox** — <@{atelier.double.bob.id}> · seeds ")
    [job] = rows(atelier, "SELECT * FROM jobs WHERE id = ?", job_id_of(variation))
    assert (job["kind"], job["parent_job"], job["parent_index"]) == ("variation", parent, 3)
    assert job["init_image"] == rows(
        atelier, "SELECT sha256 FROM images WHERE job_id = ? AND idx = 2", parent)[0][0]
    assert job["user_id"] == atelier.double.bob.id
    assert (pixels(variation.attachment_bytes()) != pixels(grid_message.attachment_bytes())).any()


async def test_reroll_uses_fresh_seeds_even_after_a_fixed_seed(atelier: Atelier) -> None:
    grid_message = await finished(await atelier.imagine("a red fox --seed 42"))
    parent = job_id_of(grid_message)
    click = await atelier.double.click(grid_message, button(grid_message, "🔄"))
    rerolled = await finished(click)
    [job] = rows(atelier, "SELECT * FROM jobs WHERE id = ?", job_id_of(rerolled))
    assert (job["kind"], job["parent_job"], job["count"]) == ("reroll", parent, 4)
    assert job["seed"] != 42
    assert f"seeds {job['seed']}–{job['seed'] + 3}" in rerolled.content
    assert (pixels(rerolled.attachment_bytes()) != pixels(grid_message.attachment_bytes())).any()


async def test_buttons_work_after_a_restart(atelier: Atelier) -> None:
    grid_message = await finished(await atelier.imagine("a red fox --seed 42"))
    await atelier.restart()
    click = await atelier.double.click(grid_message, button(grid_message, "U1"))
    single = await posted(click)
    assert single.content.endswith("· image 1")
    assert (pixels(single.attachment_bytes()) ==
            pixels(grid_message.attachment_bytes())[0:128, 0:128]).all()
    again = await finished(await atelier.double.click(grid_message, button(grid_message, "V1")))
    assert again.button_labels == [ROW1, ROW2]


async def test_placeholder_shows_queue_position_then_progress(atelier: Atelier) -> None:
    slow = await atelier.imagine("a slow one", steps=150)
    waiting = await atelier.imagine("a waiting one", user=atelier.double.bob, count=1)
    running, queued = await finished(slow, 60), await finished(waiting, 60)

    def states(message: Message) -> list[tuple[str, list[str], str]]:
        return [(h["content"].split("\n")[-1], h["attachments"],
                 str(h["components"])) for h in message.history]

    progress = [s for s in states(running) if re.fullmatch(r"step \d+/150", s[0])]
    assert progress, states(running)
    assert any(attachments == ["preview.png"] for _, attachments, _ in progress)
    assert all("Cancel" in components for _, _, components in progress)
    waiting_states = [s for s in states(queued) if s[0].startswith("Queued — position")]
    assert waiting_states and waiting_states[-1][0] == "Queued — position 1", states(queued)
    assert all(a == [] and "Cancel" in c for _, a, c in waiting_states)
    # a finished result has no Cancel button
    assert running.button_labels == [ROW1, ROW2]
    assert queued.button_labels == [["U1", "🔄"], ["V1"]]


async def test_cancel_stops_a_running_job(atelier: Atelier) -> None:
    handle = await atelier.imagine("a very long job", steps=150)
    message = await handle.original()
    await message.wait_until(lambda m: "\nstep " in m.content, 30)
    job_id = rows(atelier, "SELECT id FROM jobs")[0][0]

    stranger = await atelier.double.click(message, f"atelier:c:{job_id}", user=atelier.double.bob)
    refused = await stranger.response()
    assert refused.ephemeral and "Only the author" in refused.data["content"]

    await atelier.double.click(message, f"atelier:c:{job_id}", user=atelier.double.alice)
    await message.wait_until(lambda m: m.content.endswith("\nCancelled"), 10)
    assert message.attachments == [] and message.buttons == []
    [job] = rows(atelier, "SELECT status FROM jobs WHERE id = ?", job_id)
    assert job["status"] == "cancelled"
    assert rows(atelier, "SELECT count(*) FROM images")[0][0] == 0


async def test_queue_limit_per_user(atelier: Atelier) -> None:
    handles = [await atelier.imagine(f"job {i}", steps=150, count=1) for i in range(3)]
    fourth = await atelier.imagine("one too many")
    response = await fourth.response()
    assert response.ephemeral and "at most 3 at a time" in response.data["content"]
    other_user = await atelier.imagine("bob is not limited by alice", user=atelier.double.bob,
                                       count=1, steps=2)
    assert (await other_user.response()).type == 5
    for handle in handles:
        message = await handle.original()
        job_id = rows(atelier, "SELECT id FROM jobs WHERE message_id = ?", message.id)[0][0]
        await atelier.double.click(message, f"atelier:c:{job_id}")
    assert rows(atelier, "SELECT count(*) FROM jobs WHERE prompt = 'one too many'")[0][0] == 0
