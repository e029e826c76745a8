"""Continuing from results: Vary, Upscale, remix mode, favourites and deleting."""

from __future__ import annotations

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
from tests.e2e.test_history import history, seed_job
from tests.e2e.test_image_info import info_fields

pytestmark = pytest.mark.e2e

ROW1 = ["U1", "U2", "U3", "U4", "🔄"]
ROW2 = ["V1", "V2", "V3", "V4"]


async def single_image(atelier: Atelier, prompt: str = "a red fox --seed 42",
                       label: str = "U2") -> tuple[Message, Message]:
    """A grid, and image `label` of it posted alone."""
    grid = await finished(await atelier.imagine(prompt))
    click = await atelier.double.click(grid, button(grid, label))
    return grid, await posted(click)


async def deleted_rows(atelier: Atelier, count: int) -> None:
    """Wait until the bot has recorded `count` deleted messages (just after Discord's answer)."""
    await atelier.double.wait_for(
        lambda: rows(atelier, "SELECT count(*) FROM deleted_messages")[0][0] == count,
        description=f"{count} deleted messages recorded")


@pytest.mark.parametrize(("label", "strength"), [("Vary (Subtle)", 0.35),
                                                 ("Vary (Strong)", 0.7)])
async def test_vary_makes_four_variations_with_its_strength(atelier: Atelier, label: str,
                                                            strength: float) -> None:
    grid, single = await single_image(atelier)
    click = await atelier.double.click(single, button(single, label), user=atelier.double.bob)
    assert (await click.response()).type == 5
    varied = await finished(click)
    assert varied.id not in (grid.id, single.id)
    assert varied.button_labels == [ROW1, ROW2]
    [job] = rows(atelier, "SELECT * FROM jobs WHERE id = ?", job_id_of(varied))
    assert (job["kind"], job["parent_job"], job["parent_index"]) == (
        "variation", job_id_of(grid), 2)
    assert job["strength"] == pytest.approx(strength)
    assert (pixels(varied.attachment_bytes()) != pixels(grid.attachment_bytes())).any()


async def test_subtle_variations_differ_less_than_strong_ones(atelier: Atelier) -> None:
    grid, single = await single_image(atelier, "a house --seed 5 --n 1", "U1")
    subtle = await finished(await atelier.double.click(single, button(single, "Vary (Subtle)")))
    strong = await finished(await atelier.double.click(single, button(single, "Vary (Strong)")))

    def spread(message: Message) -> float:
        """How far the four pictures of a grid are from each other: less noise added to the
        source leaves the seeds less room."""
        grid_pixels = pixels(message.attachment_bytes())
        cells = [grid_pixels[r:r + 128, c:c + 128] for r in (0, 128) for c in (0, 128)]
        return float(sum(abs(a - b).mean() for i, a in enumerate(cells) for b in cells[i + 1:]))

    assert spread(subtle) < spread(strong)


async def test_upscale_doubles_the_size(atelier: Atelier) -> None:
    grid, single = await single_image(atelier, "a red fox --ar 3:2 --seed 42")
    click = await atelier.double.click(single, button(single, "Upscale (2x)"))
    upscaled = await finished(click)
    data = upscaled.attachment_bytes()
    assert image_size(data) == (320, 208)
    assert upscaled.button_labels == [["U1", "🔄"], ["V1"]]
    [job] = rows(atelier, "SELECT * FROM jobs WHERE id = ?", job_id_of(upscaled))
    assert (job["kind"], job["width"], job["height"], job["count"]) == ("upscale", 320, 208, 1)
    assert "Size: 320x208" in png_info(data)["parameters"]
    assert "Denoising strength: 0.3" in png_info(data)["parameters"]
    # a light img2img pass starting from the picture that was upscaled
    source = rows(atelier, "SELECT sha256 FROM images WHERE job_id = ? AND idx = 1",
                  job_id_of(grid))[0][0]
    assert (job["init_image"], job["strength"], job["parent_index"]) == (source, 0.3, 2)


async def test_upscale_above_the_pixel_limit_is_refused(atelier: Atelier) -> None:
    await atelier.restart(sd_model="tiny")
    grid, single = await single_image(atelier)
    job_id = job_id_of(grid)
    # Pretend the picture were already 1600×1600: twice that is over 4.2 megapixels.
    import sqlite3
    db = sqlite3.connect(atelier.settings.database_path)
    with db:
        db.execute("UPDATE images SET width = 1600, height = 1600 WHERE job_id = ?", (job_id,))
    db.close()
    click = await atelier.double.click(single, button(single, "Upscale (2x)"))
    response = await click.response()
    assert response.ephemeral
    assert "3200×3200" in response.data["content"] and "4.2" in response.data["content"]


async def test_remix_mode_lets_the_user_edit_the_prompt_first(atelier: Atelier) -> None:
    grid = await finished(await atelier.imagine("a red fox --seed 42"))
    atelier_bot = atelier.bot
    assert atelier_bot is not None
    from storage import UserSettings
    await atelier_bot.repo.save_settings(UserSettings(atelier.double.alice.id, remix=True))

    click = await atelier.double.click(grid, button(grid, "V1"))
    response = await click.response()
    assert response.type == 9  # a modal
    inputs = {c["custom_id"]: c for row in click.modal["components"]
              for c in row.get("components", [row.get("component", {})])}
    assert inputs["prompt"]["value"].startswith("a red fox --steps 30 --cfg 7")
    submitted = await atelier.double.submit_modal(
        click.modal["custom_id"], {"prompt": "a blue fox --steps 10 --n 2", "negative": "snow"})
    remixed = await finished(submitted)
    assert remixed.content.startswith("**a blue fox** — ")
    assert remixed.button_labels == [["U1", "U2", "🔄"], ["V1", "V2"]]
    [job] = rows(atelier, "SELECT * FROM jobs WHERE id = ?", job_id_of(remixed))
    assert (job["kind"], job["prompt"], job["negative"], job["steps"], job["count"]) == (
        "variation", "a blue fox", "snow", 10, 2)

    # with remix off (the default for bob) the same button runs at once
    direct = await atelier.double.click(grid, button(grid, "V1"), user=atelier.double.bob)
    assert (await direct.response()).type == 5


async def test_remix_with_bad_parameters_is_refused_privately(atelier: Atelier) -> None:
    grid = await finished(await atelier.imagine("a red fox"))
    assert atelier.bot is not None
    from storage import UserSettings
    await atelier.bot.repo.save_settings(UserSettings(atelier.double.alice.id, remix=True))
    click = await atelier.double.click(grid, button(grid, "🔄"))
    await click.response()
    submitted = await atelier.double.submit_modal(click.modal["custom_id"],
                                                  {"prompt": "a fox --steps 999"})
    response = await submitted.response()
    assert response.ephemeral and "from 1 to 150" in response.data["content"]
    assert rows(atelier, "SELECT count(*) FROM jobs")[0][0] == 1


async def test_favourite_toggles_privately(atelier: Atelier) -> None:
    grid, single = await single_image(atelier)
    job_id = job_id_of(grid)
    first = await atelier.double.click(single, button(single, "❤️"), user=atelier.double.bob)
    response = await first.response()
    assert response.ephemeral and "is in your favourites" in response.data["content"]
    assert [tuple(r) for r in rows(atelier, "SELECT user_id, job_id, idx FROM favourites")] == [
        (atelier.double.bob.id, job_id, 1)]
    second = await atelier.double.click(single, button(single, "❤️"), user=atelier.double.bob)
    assert "no longer a favourite" in (await second.response()).data["content"]
    assert rows(atelier, "SELECT count(*) FROM favourites")[0][0] == 0


async def test_delete_is_for_the_author_or_moderators(atelier: Atelier) -> None:
    grid, single = await single_image(atelier)
    job_id = job_id_of(grid)
    stranger = await atelier.double.click(single, button(single, "🗑️"), user=atelier.double.bob)
    refused = await stranger.response()
    assert refused.ephemeral and "Only the author" in refused.data["content"]
    assert not single.deleted

    moderator = await atelier.double.click(single, button(single, "🗑️"), user=atelier.double.mod)
    await single.wait_until(lambda m: m.deleted)
    await moderator.response()
    await deleted_rows(atelier, 1)
    # that message is recorded as deleted, not the job: its grid and pictures are all there
    assert [tuple(r) for r in rows(atelier, "SELECT message_id, job_id, idx, deleted_by"
                                            " FROM deleted_messages")] == [
        (single.id, job_id, 1, atelier.double.mod.id)]
    [job] = rows(atelier, "SELECT status, deleted_at FROM jobs WHERE id = ?", job_id)
    assert job["status"] == "done" and job["deleted_at"] is None
    assert len(rows(atelier, "SELECT * FROM images WHERE job_id = ?", job_id)) == 4
    assert not grid.deleted


async def test_a_message_is_recorded_deleted_only_once_discord_has_deleted_it(
        atelier: Atelier) -> None:
    grid, single = await single_image(atelier, label="U2")
    job_id = job_id_of(grid)
    other = await posted(await atelier.double.click(grid, button(grid, "U3")))
    refusal = atelier.double.fail("DELETE", r"/messages/@original$", status=403,
                                  body={"message": "Missing Permissions", "code": 50013})
    press = await atelier.double.click(single, button(single, "🗑️"))
    await press.response()
    [answer] = await atelier.double.wait_for(lambda: press.followups)
    assert answer.ephemeral and answer.content == (
        "❌ Discord did not delete the message; it is still there. Try again in a moment.")
    assert not single.deleted and refusal.hits == 1
    assert rows(atelier, "SELECT count(*) FROM deleted_messages")[0][0] == 0
    _, fields = await info_fields(atelier, grid)
    assert fields["Status"] == "done"

    again = await atelier.double.click(single, button(single, "🗑️"))
    await single.wait_until(lambda m: m.deleted)
    await again.response()
    await deleted_rows(atelier, 1)
    _, fields = await info_fields(atelier, grid)
    assert fields["Status"] == "done (message of image 2 deleted)"
    _, fields = await info_fields(atelier, other)  # image 3's message is still there
    assert fields["Status"] == "done (message of image 2 deleted)"
    listed = await history(atelier)
    assert listed.content.split("\n")[1].endswith(f"`{job_id}` (message of image 2 deleted)")
    await atelier.double.click(other, button(other, "🗑️"))
    await other.wait_until(lambda m: m.deleted)
    await deleted_rows(atelier, 2)
    _, fields = await info_fields(atelier, grid)
    assert fields["Status"] == "done (messages of images 2, 3 deleted)"


async def test_whoever_posted_a_picture_may_delete_that_post(atelier: Atelier) -> None:
    grid = await finished(await atelier.imagine("a red fox --seed 42"))
    bobs = await posted(await atelier.double.click(grid, button(grid, "U3"),
                                                   user=atelier.double.bob))
    press = await atelier.double.click(bobs, button(bobs, "🗑️"), user=atelier.double.bob)
    await bobs.wait_until(lambda m: m.deleted)
    assert (await press.response()).type == 6  # acknowledged without a message
    assert not grid.deleted


async def test_variations_of_an_upscale_are_made_at_the_models_size(atelier: Atelier) -> None:
    grid, single = await single_image(atelier, "a red fox --ar 3:2 --seed 42")
    upscaled = await finished(await atelier.double.click(single, button(single, "Upscale (2x)")))
    assert image_size(upscaled.attachment_bytes()) == (320, 208)
    varied = await finished(await atelier.double.click(upscaled, button(upscaled, "V1")))
    assert image_size(varied.attachment_bytes()) == (2 * 160, 2 * 104)  # four 160×104 cells
    [job] = rows(atelier, "SELECT kind, width, height FROM jobs WHERE id = ?", job_id_of(varied))
    assert (job["kind"], job["width"], job["height"]) == ("variation", 160, 104)


async def test_remix_of_a_long_prompt_keeps_all_of_it(atelier: Atelier) -> None:
    long_prompt = ("a very detailed watercolour of a lighthouse at dusk, " * 19).strip()[:990]
    # Written, not generated: the tiny model reads one token per letter, and this prompt would
    # need more chunks of 75 tokens than a job may have (a real vocabulary needs 3).
    parent = await seed_job(atelier, long_prompt, count=1)
    grid = await posted(await atelier.double.slash("recall", {"job": parent.id},
                                                   user=atelier.double.alice))
    assert atelier.bot is not None
    from storage import UserSettings
    await atelier.bot.repo.save_settings(UserSettings(atelier.double.alice.id, remix=True))
    click = await atelier.double.click(grid, button(grid, "🔄"))
    await click.response()
    inputs = {c["custom_id"]: c for row in click.modal["components"]
              for c in row.get("components", [row.get("component", {})])}
    prefill = inputs["prompt"]["value"]
    assert len(prefill) > 1000 and inputs["prompt"]["max_length"] >= len(prefill)
    remixed = await finished(await atelier.double.submit_modal(
        click.modal["custom_id"], {"prompt": prefill}))
    [job] = rows(atelier, "SELECT prompt FROM jobs WHERE id = ?", job_id_of(remixed))
    assert job["prompt"] == long_prompt
