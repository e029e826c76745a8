"""The `Image info` message command end to end: parameters, seeds and lineage, privately."""

from __future__ import annotations

from typing import Any

import pytest

from tests.double import Callback, Message
from tests.e2e.conftest import Atelier, button, finished, job_id_of, posted

pytestmark = pytest.mark.e2e


async def image_info(atelier: Atelier, message: Message, **options: Any) -> Callback:
    """Use `Image info` on `message`; the answer must be private."""
    handle = await atelier.double.context_menu("Image info", message, **options)
    response = await handle.response()
    assert response.type == 4 and response.ephemeral
    assert (await handle.original()).ephemeral
    return response


async def info_fields(atelier: Atelier, message: Message) -> tuple[dict[str, Any], dict[str, str]]:
    """The embed `Image info` answers with, and its fields by name."""
    response = await image_info(atelier, message)
    [embed] = response.data["embeds"]
    return embed, {field["name"]: field["value"] for field in embed["fields"]}


async def test_image_info_on_a_grid_shows_every_parameter(atelier: Atelier) -> None:
    alice = atelier.double.alice
    grid = await finished(await atelier.imagine("a lighthouse --seed 42 --steps 12 --cfg 6.5",
                                                negative="fog"))
    job_id = job_id_of(grid)
    embed, fields = await info_fields(atelier, grid)
    assert embed["title"] == f"Job {job_id}"
    assert embed["description"] == "**a lighthouse**"
    assert fields["Negative prompt"] == "fog"
    assert (fields["Model"], fields["Sampler"], fields["Size"]) == ("tiny", "euler (Euler)",
                                                                    "128×128")
    assert (fields["Steps"], fields["CFG scale"]) == ("12", "6.5")
    assert "Strength" not in fields
    assert fields["Seeds"] == "1: 42 · 2: 43 · 3: 44 · 4: 45"
    assert (fields["Status"], fields["Kind"], fields["Author"]) == ("done", "imagine",
                                                                    f"<@{alice.id}>")
    assert fields["Created"].startswith("<t:")
    assert fields["Made from"] == "a new prompt"
    assert fields["Made from it"] == "nothing yet"
    assert [m for m in atelier.double.messages if not m.ephemeral] == [grid]


async def test_image_info_follows_the_lineage(atelier: Atelier) -> None:
    grid = await finished(await atelier.imagine("a red fox --seed 7"))
    grid_id = job_id_of(grid)

    single = await posted(await atelier.double.click(grid, button(grid, "U2")))
    embed, fields = await info_fields(atelier, single)
    assert embed["title"] == f"Image 2 of job {grid_id}"
    assert fields["Seed"] == "8"

    variation = await finished(await atelier.double.click(grid, button(grid, "V3"),
                                                          user=atelier.double.bob))
    variation_id = job_id_of(variation)
    reroll = await finished(await atelier.double.click(grid, button(grid, "🔄")))
    reroll_id = job_id_of(reroll)

    embed, fields = await info_fields(atelier, variation)
    assert embed["title"] == f"Job {variation_id}"
    assert fields["Kind"] == "variation"
    assert fields["Made from"] == f"variation of image 3 of job `{grid_id}`"
    assert fields["Strength"] == "0.7"
    assert fields["Author"] == f"<@{atelier.double.bob.id}>"

    _, fields = await info_fields(atelier, reroll)
    assert fields["Made from"] == f"reroll of job `{grid_id}`"

    _, fields = await info_fields(atelier, grid)
    assert fields["Made from it"].splitlines() == [
        f"`{variation_id}` — variation of image 3 (done)",
        f"`{reroll_id}` — reroll (done)",
    ]


async def test_a_message_without_the_job_id_is_found_in_the_database(atelier: Atelier) -> None:
    handle = await atelier.imagine("a slow fox", steps=150)
    message = await handle.original()
    await message.wait_until(lambda m: "step " in m.content, timeout=30)
    await atelier.double.click(message, button(message, "Cancel"))
    await message.wait_until(lambda m: "Cancelled" in m.content)
    assert "job `" not in message.content

    embed, fields = await info_fields(atelier, message)
    assert embed["title"].startswith("Job ")
    assert fields["Status"] == "cancelled"
    assert fields["Steps"] == "150"


async def test_image_info_from_another_server_finds_no_job(atelier: Atelier) -> None:
    double = atelier.double
    grid = await finished(await atelier.imagine("a red fox"))
    response = await image_info(atelier, grid, user=double.eve, channel=double.other_channel)
    assert response.data["content"] == f"No job `{job_id_of(grid)}` in this server."
    assert not response.data.get("embeds")


async def test_image_info_on_someone_elses_message(atelier: Atelier) -> None:
    double = atelier.double
    posted = await double.post_message(double.channel, "look: job `abcdefgh`", user=double.bob)
    response = await image_info(atelier, posted)
    assert response.data["content"] == "This message has no Atelier image."
