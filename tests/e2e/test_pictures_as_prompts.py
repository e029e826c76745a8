"""Pictures as prompts end to end (SPEC §3.2), with tiny random adapters: `/imagine`'s
`control_image` and `reference`, `/blend` and `/describe`, through the bot and the double."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from PIL import Image, ImageDraw

from bot.imaging import size_for
from bot.prompt import Aspect
from tests.double import DiscordDouble, InteractionHandle, Message
from tests.e2e.conftest import (
    Atelier,
    button,
    finished,
    image_size,
    job_id_of,
    pixels,
    posted,
    rows,
    running_atelier,
    settings_for,
    withdrawn,
)
from tests.e2e.test_batching import record_calls

pytestmark = pytest.mark.e2e

QUICK = {"count": 1, "steps": 4}


def png(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def drawing(size: tuple[int, int] = (96, 96)) -> bytes:
    picture = Image.new("RGB", size, "white")
    ImageDraw.Draw(picture).rectangle((20, 20, size[0] - 20, size[1] - 20), outline="black",
                                      width=4)
    return png(picture)


def plain(colour: str, size: tuple[int, int] = (64, 64)) -> bytes:
    return png(Image.new("RGB", size, colour))


@pytest_asyncio.fixture
async def atelier(discord_double: DiscordDouble, data_dir: Path,
                  tiny_adapters: dict[str, Path]) -> AsyncIterator[Atelier]:
    settings = settings_for(
        discord_double, data_dir,
        sd_controlnets=((None, "canny", str(tiny_adapters["controlnet"])),
                        ("tiny", "tile", str(tiny_adapters["controlnet"]))),
        sd_ip_adapter=(("tiny", str(tiny_adapters["ip_adapter"])),),
        sd_caption_model=str(tiny_adapters["captioner"]))
    async with running_atelier(discord_double, settings) as runner:
        yield runner


async def imagine(atelier: Atelier, prompt: str, files: dict[str, bytes] | None = None,
                  user: Any = None, **options: object) -> InteractionHandle:
    return await atelier.double.slash(
        "imagine", {"prompt": prompt, **QUICK, **options}, user=user or atelier.double.alice,
        attachments={name: (f"{name}.png", data, "image/png")
                     for name, data in (files or {}).items()})


async def private_answer(handle: InteractionHandle) -> str:
    response = await handle.response()
    assert response.ephemeral, response
    return str(response.data["content"])


# ---- ControlNet ---------------------------------------------------------------------------------

async def test_a_control_image_holds_the_drawing_and_its_variations_keep_it(
        atelier: Atelier) -> None:
    control = drawing()
    without = await finished(await imagine(atelier, "a house --seed 3"))
    held = await finished(await imagine(atelier, "a house --seed 3",
                                        {"control_image": control}, control="canny"))
    again = await finished(await imagine(atelier, "a house --seed 3",
                                         {"control_image": control}))  # canny: the first served
    off = await finished(await imagine(atelier, "a house --seed 3 --cw 0",
                                       {"control_image": control}))
    first, second, none, zero = (pixels(m.attachment_bytes()) for m in (held, again, without, off))
    assert np.abs(first - none).max() > 10  # the control changes the picture…
    assert np.abs(first - second).max() == 0  # …the same way each time
    assert np.abs(zero - none).max() == 0  # --cw 0 draws as if there were no control
    # the job took the control picture's aspect (square) and records its control and map
    [job] = rows(atelier, "SELECT * FROM jobs WHERE id = ?", job_id_of(held))
    assert (job["control"], job["control_weight"], job["width"]) == ("canny", 1.0, 128)
    assert job["control_image"] is not None and job["control_map"] is not None
    # Image info shows the control and the map the ControlNet read (canny: edges only)
    info = await atelier.double.context_menu("Image info", held)
    response = await info.response()
    [embed] = response.data["embeds"]
    fields = {field["name"]: field["value"] for field in embed["fields"]}
    assert fields["ControlNet"] == "canny, --cw 1 (its map below)"
    shown = await info.original()
    edges = pixels(shown.attachment_bytes())
    assert edges.shape == (128, 128, 3) and set(np.unique(edges)) == {0, 255}
    # 🔄 and V1 keep the control
    reroll = await finished(await atelier.double.click(held, button(held, "🔄")))
    variation = await finished(await atelier.double.click(held, button(held, "V1")))
    for child in (reroll, variation):
        [row] = rows(atelier, "SELECT * FROM jobs WHERE id = ?", job_id_of(child))
        assert (row["control"], row["control_image"]) == ("canny", job["control_image"])
        assert row["control_map"] is not None


async def test_a_single_pictures_variations_keep_the_control_and_the_reference(
        atelier: Atelier) -> None:
    grid = await finished(await imagine(atelier, "a house --seed 4 --iw 2",
                                        {"control_image": drawing(), "reference": plain("red")},
                                        control="tile"))
    [job] = rows(atelier, "SELECT * FROM jobs WHERE id = ?", job_id_of(grid))
    single = await posted(await atelier.double.click(grid, button(grid, "U1")))
    varied = await finished(await atelier.double.click(single, button(single, "Vary (Subtle)")))
    [child] = rows(atelier, "SELECT * FROM jobs WHERE id = ?", job_id_of(varied))
    assert (child["kind"], child["parent_index"]) == ("variation", 1)
    kept = ("control", "control_image", "control_weight", "reference_images", "image_weight")
    assert [child[name] for name in kept] == [job[name] for name in kept]
    assert child["control_image"] is not None and child["reference_images"] is not None
    assert child["control_map"] is not None


async def test_a_control_image_taken_as_its_map_says_so(atelier: Atelier,
                                                        tiny_adapters: dict[str, Path]) -> None:
    await atelier.restart(sd_controlnets=((None, "depth", str(tiny_adapters["controlnet"])),))
    taken = await finished(await imagine(atelier, "a house --seed 3", {"control_image": drawing()},
                                         control="depth"))
    assert taken.content.endswith(
        "\n-# `depth`: no depth annotator is set up (SD_ANNOTATORS): the control image was used "
        "as the depth map as it is (white near, black far)")
    # with a depth annotator, its map is used and nothing needs saying
    await atelier.restart(sd_annotators=(("depth", str(tiny_adapters["depth"])),))
    made = await finished(await imagine(atelier, "a house --seed 3", {"control_image": drawing()},
                                        control="depth"))
    assert "-# " not in made.content
    assert np.abs(pixels(made.attachment_bytes()) - pixels(taken.attachment_bytes())).max() > 0
    maps = rows(atelier, "SELECT control_map FROM jobs ORDER BY created_at")
    assert maps[0][0] != maps[1][0]


async def test_the_pose_annotator_draws_the_control_images_skeleton(
        atelier: Atelier, tiny_adapters: dict[str, Path]) -> None:
    await atelier.restart(sd_controlnets=((None, "pose", str(tiny_adapters["controlnet"])),))
    taken = await finished(await imagine(atelier, "a dancer --seed 3",
                                         {"control_image": drawing()}, control="pose"))
    assert taken.content.endswith(
        "\n-# `pose`: no pose annotator is set up (SD_ANNOTATORS): the control image was used "
        "as a pose skeleton (OpenPose's colours) as it is")
    # with a pose annotator, its skeleton is the map and nothing needs saying
    await atelier.restart(sd_annotators=(("pose", str(tiny_adapters["pose"])),))
    made = await finished(await imagine(atelier, "a dancer --seed 3",
                                        {"control_image": drawing()}, control="pose"))
    assert "-# " not in made.content
    assert np.abs(pixels(made.attachment_bytes()) - pixels(taken.attachment_bytes())).max() > 0
    root = Path(atelier.settings.images_dir)
    picture, skeleton = (pixels(next(root.glob(f"{sha[:2]}/{sha}.*")).read_bytes())
                         for [sha] in rows(atelier, "SELECT control_map FROM jobs "
                                                    "ORDER BY created_at"))
    assert (picture == 255).all(axis=-1).mean() > 0.5  # the white page taken as it is…
    assert 0.5 < (skeleton == 0).all(axis=-1).mean() < 1  # a skeleton on black
    assert not (skeleton == 255).all(axis=-1).any()  # …then a skeleton, with no white left


async def test_jobs_with_the_same_controlnet_share_a_call(
        atelier: Atelier, monkeypatch: pytest.MonkeyPatch) -> None:
    double = atelier.double
    calls = record_calls(atelier, monkeypatch)
    blocker = await atelier.imagine("a slow one", steps=150, count=1)  # the others queue
    square, circle = drawing(), drawing((96, 64))
    queued = [await imagine(atelier, "canny one", {"control_image": square},
                            user=double.bob, control="canny"),
              await imagine(atelier, "tile one", {"control_image": square},
                            user=double.mod, control="tile"),
              await imagine(atelier, "canny two --ar 1:1", {"control_image": circle},
                            control="canny")]
    await asyncio.gather(*(finished(handle, 60) for handle in (blocker, *queued)))
    assert ["canny one", "canny two"] in calls  # bob's, then alice's: the same ControlNet
    assert ["tile one"] in calls


async def test_controls_are_checked_before_anything_is_fetched(atelier: Atelier) -> None:
    control = drawing()
    depth = await imagine(atelier, "a house", {"control_image": control}, control="depth")
    assert await private_answer(depth) == (
        "❌ No `depth` ControlNet for tiny models like `tiny`. Accepted: canny, tile")
    lonely = await imagine(atelier, "a house", control="canny")
    assert await private_answer(lonely) == (
        "❌ `control` needs a `control_image` to make its map from")
    weight = await imagine(atelier, "a house --cw 1.5")
    assert await private_answer(weight) == "❌ `--cw` only applies with a `control_image`"
    # a file that is no picture gets the upload errors, and nothing public stays
    broken = await atelier.double.slash(
        "imagine", {"prompt": "a house", **QUICK}, user=atelier.double.alice,
        attachments={"control_image": ("edges.png", b"not a picture", "image/png")})
    assert await withdrawn(atelier, broken) == (
        "❌ `edges.png` is not a readable PNG, JPEG or WebP image")
    assert not rows(atelier, "SELECT id FROM jobs")


# ---- references ---------------------------------------------------------------------------------

async def test_a_reference_steers_and_iw_zero_draws_as_if_there_were_none(
        atelier: Atelier) -> None:
    red = plain("red")
    none = await finished(await imagine(atelier, "a bowl --seed 9"))
    steered = await finished(await imagine(atelier, "a bowl --seed 9", {"reference": red}))
    zero = await finished(await imagine(atelier, "a bowl --seed 9 --iw 0", {"reference": red}))
    style = await finished(await imagine(atelier, "a bowl --seed 9 --sref --sw 400",
                                         {"reference": red}))
    first, plain_one, zero_one, style_one = (pixels(m.attachment_bytes())
                                             for m in (steered, none, zero, style))
    assert np.abs(first - plain_one).max() > 10
    assert np.abs(zero_one - plain_one).max() == 0
    assert np.abs(style_one - first).max() > 0
    [job] = rows(atelier, "SELECT * FROM jobs WHERE id = ?", job_id_of(style))
    assert (job["image_weight"], job["style_weight"]) == (1.0, 400.0)
    assert len(job["reference_images"]) == 64
    # a reroll keeps the reference
    reroll = await finished(await atelier.double.click(style, button(style, "🔄")))
    [again] = rows(atelier, "SELECT * FROM jobs WHERE id = ?", job_id_of(reroll))
    assert (again["reference_images"], again["style_weight"]) == (job["reference_images"],
                                                                  400.0)
    # …and so does a variation
    variation = await finished(await atelier.double.click(style, button(style, "V1")))
    [varied] = rows(atelier, "SELECT * FROM jobs WHERE id = ?", job_id_of(variation))
    assert (varied["reference_images"], varied["image_weight"], varied["style_weight"]) == (
        job["reference_images"], 1.0, 400.0)


async def test_a_reference_that_is_no_picture_gets_the_upload_errors(atelier: Atelier) -> None:
    text = await atelier.double.slash(
        "imagine", {"prompt": "a bowl", **QUICK}, user=atelier.double.alice,
        attachments={"reference": ("notes.txt", b"words", "text/plain")})
    assert await private_answer(text) == "❌ `notes.txt` is not an image (PNG, JPEG or WebP)"
    broken = await atelier.double.slash(
        "imagine", {"prompt": "a bowl", **QUICK}, user=atelier.double.alice,
        attachments={"reference": ("style.png", b"not a picture", "image/png")})
    assert await withdrawn(atelier, broken) == (
        "❌ `style.png` is not a readable PNG, JPEG or WebP image")
    assert not rows(atelier, "SELECT id FROM jobs")


@pytest.mark.parametrize(("prompt", "error"), [
    ("a bowl --sref", "❌ `--sref` only applies with a `reference` picture"),
    ("a bowl --sw 200", "❌ `--sw` only applies with a `reference` picture"),
    ("a bowl --iw 2", "❌ `--iw` only applies with a `reference` picture"),
])
async def test_reference_weights_without_a_reference_are_refused(
        atelier: Atelier, prompt: str, error: str) -> None:
    assert await private_answer(await imagine(atelier, prompt)) == error


# ---- /blend -------------------------------------------------------------------------------------

async def blend(atelier: Atelier, *pictures: bytes, **options: object) -> InteractionHandle:
    return await atelier.double.slash(
        "blend", options, user=atelier.double.alice,
        attachments={f"image{n}": (f"picture{n}.png", data, "image/png")
                     for n, data in enumerate(pictures, start=1)})


async def test_blend_mixes_pictures_into_a_grid_with_the_usual_buttons(atelier: Atelier) -> None:
    grid = await finished(await blend(atelier, plain("red"), plain("blue"), plain("green"),
                                      dimensions="portrait"), 60)
    assert grid.content.startswith("**/blend of 3 pictures** — <@")
    assert grid.button_labels == [["U1", "U2", "U3", "U4", "🔄"], ["V1", "V2", "V3", "V4"]]
    [job] = rows(atelier, "SELECT * FROM jobs WHERE id = ?", job_id_of(grid))
    assert (job["kind"], job["prompt"], job["count"]) == ("blend", "", 4)
    assert len(job["reference_images"].split(",")) == 3
    assert (job["width"], job["height"]) == size_for(Aspect(2, 3), 128)  # portrait
    assert image_size(grid.attachment_bytes()) == (2 * job["width"], 2 * job["height"])
    # 🔄 blends the same pictures again
    again = await finished(await atelier.double.click(grid, button(grid, "🔄")), 60)
    [reroll] = rows(atelier, "SELECT * FROM jobs WHERE id = ?", job_id_of(again))
    assert reroll["reference_images"] == job["reference_images"]


async def test_blend_takes_two_to_five_pictures(atelier: Atelier) -> None:
    # Discord itself refuses one picture (image2 is required) and a sixth (there is no image6)
    with pytest.raises(ValueError, match="needs option 'image2'"):
        await blend(atelier, plain("red"))
    with pytest.raises(ValueError, match=r"has no options \['image6'\]"):
        await blend(atelier, *(plain(colour) for colour in
                               ("red", "blue", "green", "white", "black", "grey")))
    broken = await atelier.double.slash(
        "blend", {}, user=atelier.double.alice,
        attachments={"image1": ("a.png", plain("red"), "image/png"),
                     "image2": ("b.txt", b"words", "text/plain")})
    assert await private_answer(broken) == "❌ `b.txt` is not an image (PNG, JPEG or WebP)"


# ---- /describe ----------------------------------------------------------------------------------

async def describe(atelier: Atelier, data: bytes) -> Message:
    handle = await atelier.double.slash("describe", {}, user=atelier.double.alice,
                                        attachments={"image": ("photo.png", data, "image/png")})
    return await finished(handle)


async def test_describe_suggests_four_prompts_whose_buttons_imagine_them(
        atelier: Atelier) -> None:
    message = await describe(atelier, drawing((96, 64)))
    lines = message.content.split("\n")
    assert lines[0].startswith("**/describe** — <@") and " · job `" in lines[0]
    assert [line[:6] for line in lines[1:]] == ["**1.**", "**2.**", "**3.**", "**4.**"]
    assert message.button_labels == [["1", "2", "3", "4", "🔄"]]
    [job] = rows(atelier, "SELECT * FROM jobs WHERE id = ?", job_id_of(message))
    suggestions = job["suggestions"].split("\n")
    assert job["kind"] == "describe" and len(suggestions) == 4
    assert all(text.strip() for text in suggestions)
    # `2` imagines suggestion 2 at the picture's aspect (3:2)
    made = await finished(await atelier.double.click(message, button(message, "2")), 60)
    [child] = rows(atelier, "SELECT * FROM jobs WHERE id = ?", job_id_of(made))
    assert (child["prompt"], child["kind"], child["parent_job"]) == (
        suggestions[1], "imagine", job["id"])
    assert (child["width"], child["height"]) == size_for(Aspect(3, 2), 128)
    # 🔄 describes the same picture again
    again = await finished(await atelier.double.click(message, button(message, "🔄")))
    [other] = rows(atelier, "SELECT * FROM jobs WHERE id = ?", job_id_of(again))
    assert (other["kind"], other["init_image"]) == ("describe", job["init_image"])
    assert len(other["suggestions"].split("\n")) == 4
    assert other["suggestions"] != job["suggestions"]  # sampled with a new seed


async def test_describe_refuses_a_bad_file_and_needs_a_captioning_model(
        atelier: Atelier) -> None:
    broken = await atelier.double.slash(
        "describe", {}, user=atelier.double.alice,
        attachments={"image": ("photo.png", b"not a picture", "image/png")})
    assert await withdrawn(atelier, broken) == (
        "❌ `photo.png` is not a readable PNG, JPEG or WebP image")
    await atelier.restart(sd_caption_model=None)
    unset = await atelier.double.slash(
        "describe", {}, user=atelier.double.alice,
        attachments={"image": ("photo.png", plain("red"), "image/png")})
    assert await private_answer(unset) == (
        "❌ /describe is not set up on this bot (SD_CAPTION_MODEL)")
