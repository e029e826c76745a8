"""FLUX.1, SD 3.5 and a few-step SDXL model end to end, through the real bot, the Discord double and
tiny random models of each: `/imagine`, `U`/`V`/`🔄`, an edit, a LoRA, `--draft` and `Enhance`,
a refused sampler, and `/info`."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
from PIL import Image

from tests.double import DiscordDouble, Message
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
    running_atelier,
    settings_for,
)
from tests.e2e.test_edit import cells, far_from_box
from tests.e2e.test_info import info
from tests.models import FamilyFiles

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class Case:
    model: str
    label: str
    sampler: str  # what its jobs run with by default, and its PNGs say
    steps: int
    lora: str
    refused: str  # a sampler it refuses, and the answer
    answer: str


CASES = [
    Case("flux", "FLUX.1 [schnell] (tiny, random)", "Euler", 4, "flux-kohya", "dpm++_2m_karras",
         "❌ FLUX.1 [schnell] (tiny, random) is a flow-matching model: it takes the sampler "
         "`euler` (flow-matching Euler), not `dpm++_2m_karras`"),
    Case("sd3", "SD 3.5 Large (tiny, random)", "Euler", 28, "sd3-detail", "euler_a",
         "❌ SD 3.5 Large (tiny, random) is a flow-matching model: it takes the sampler `euler` "
         "(flow-matching Euler), not `euler_a`"),
    Case("lightning", "SDXL-Lightning", "Euler", 4, "xl-detail", "heun",
         "❌ Unknown sampler `heun`. Accepted for SDXL-Lightning: `euler`, `euler_a`, `dpm++_2m`, "
         "`dpm++_2m_karras`, `dpm++_sde`, `ddim`, `unipc`, `lcm`"),
]


@pytest_asyncio.fixture
async def atelier(discord_double: DiscordDouble, data_dir: Path,
                  family_files: FamilyFiles) -> AsyncIterator[Atelier]:
    """The bot with the tiny model and a tiny model of each family, and their LoRAs."""
    for name in ("tiny-flux", "tiny-sd3"):
        (data_dir / "models" / name).symlink_to((family_files.cache / name).resolve(),
                                               target_is_directory=True)
    settings = settings_for(
        discord_double, data_dir, lora_dir=family_files.loras,
        sd_models=(("flux", "tiny-flux"), ("sd3", "tiny-sd3"),
                   ("lightning", str(family_files.lightning))))
    async with running_atelier(discord_double, settings) as runner:
        yield runner


def job_row(atelier: Atelier, message: Message) -> dict[str, object]:
    [job] = rows(atelier, "SELECT * FROM jobs WHERE id = ?", job_id_of(message))
    return dict(job)


async def press(atelier: Atelier, message: Message, label: str) -> Message:
    return await finished(await atelier.double.click(message, button(message, label)))


async def refused(atelier: Atelier, prompt: str) -> str:
    response = await (await atelier.imagine(prompt)).response()
    assert response.type == 4 and response.ephemeral
    return str(response.data["content"])


@pytest.mark.parametrize("case", CASES, ids=[case.model for case in CASES])
async def test_each_family_serves_every_feature(atelier: Atelier, case: Case) -> None:
    # 1. /imagine: a grid of four at the model's area, with its defaults
    grid = await finished(await atelier.imagine(f"a red fox --model {case.model} --seed 40"))
    assert image_size(grid.attachment_bytes()) == (256, 256)
    assert grid.button_labels == [["U1", "U2", "U3", "U4", "🔄"], ["V1", "V2", "V3", "V4"]]
    job = job_row(atelier, grid)
    assert (job["model"], job["steps"], job["seed"]) == (case.model, case.steps, 40)
    parameters = png_info(grid.attachment_bytes())["parameters"]
    assert f"Sampler: {case.sampler}," in parameters and f"Model: {case.model}" in parameters

    # 2. U1, V1, 🔄 and an edit
    single = await posted(await atelier.double.click(grid, button(grid, "U1")))
    assert "Enhance" not in sum(single.button_labels, [])  # not a draft
    variations = await press(atelier, grid, "V1")
    assert job_row(atelier, variations)["kind"] == "variation"
    assert image_size(variations.attachment_bytes()) == (256, 256)
    again = await press(atelier, grid, "🔄")
    assert job_row(atelier, again)["seed"] != 40
    zoomed = await press(atelier, single, "Zoom Out 2x")
    assert (job_row(atelier, zoomed)["kind"], image_size(zoomed.attachment_bytes())) == (
        "zoom", (256, 256))
    # the picture, at half its size, is kept in the middle of each new one (SPEC §3.1)
    smaller = Image.open(io.BytesIO(single.attachment_bytes())).convert("RGB").resize(
        (64, 64), Image.Resampling.LANCZOS)
    expected = np.zeros((128, 128, 3), dtype=np.int16)
    expected[32:96, 32:96] = np.asarray(smaller)
    kept = far_from_box((128, 128), (32, 32, 64, 64))
    for cell in cells(zoomed):
        assert np.abs(cell[kept] - expected[kept]).max() <= 2
        assert np.abs(cell[:24] - expected[:24]).mean() > 10  # the border is drawn anew

    # 3. a LoRA changes the picture of the same seed
    plain = await finished(await atelier.imagine(f"a red fox --model {case.model} --seed 7 --n 1"))
    styled = await finished(await atelier.imagine(
        f"a red fox <lora:{case.lora}:1> --model {case.model} --seed 7 --n 1"))
    difference = np.abs(pixels(plain.attachment_bytes()) - pixels(styled.attachment_bytes()))
    assert difference.max() > 10

    # 4. a draft, and its picture at full quality from the same seed
    draft = await finished(await atelier.imagine(
        f"a red fox --model {case.model} --draft --n 1 --seed 9"))
    assert draft.button_labels == [["U1", "🔄", "Enhance"], ["V1"]]
    assert "-# draft: `Enhance` on this picture renders it at full quality" in draft.content
    drafted = job_row(atelier, draft)
    assert (drafted["draft"], drafted["steps"]) == (case.model, min(8, case.steps))
    enhanced = await press(atelier, draft, "Enhance")
    better = job_row(atelier, enhanced)
    assert (better["kind"], better["mode"], better["model"], better["seed"], better["steps"],
            better["draft"], better["parent_job"]) == (
        "enhance", "img2img", case.model, 9, case.steps, None, drafted["id"])
    assert image_size(enhanced.attachment_bytes()) == (128, 128)
    assert enhanced.button_labels == [["U1", "🔄"], ["V1"]]  # no longer a draft
    # the U<n> pictures of a draft have it too
    drafts = await finished(await atelier.imagine(f"a fox --model {case.model} --draft --n 2"))
    picture = await posted(await atelier.double.click(drafts, button(drafts, "U2")))
    assert picture.button_labels[-1] == ["Enhance", "Upscale (2x)", "❤️", "🗑️"]

    # 5. a sampler it does not take is refused, naming those it takes
    assert await refused(atelier, f"a fox --model {case.model} --sampler {case.refused}") == (
        case.answer)


async def test_flux_refuses_what_it_cannot_do_and_info_says_so(atelier: Atelier) -> None:
    assert await refused(atelier, "a fox --model flux --no fog") == (
        "❌ FLUX.1 [schnell] (tiny, random) takes no negative prompt (it is guidance-distilled): "
        "leave out `negative` and `--no`, and describe only what should be in the picture")
    assert await refused(atelier, "a fox::2 a hen --model sd3") == (
        "❌ SD 3.5 Large (tiny, random) reads the prompt as one sentence: `::` weights do not "
        "apply to it; write the parts as one prompt")
    assert rows(atelier, "SELECT count(*) FROM jobs")[0][0] == 0
    fields = await info(atelier)
    assert fields["Models"].splitlines()[1:3] == [
        "**flux** — FLUX.1 [schnell] (tiny, random) · 128×128 · 4 steps · CFG 0 · euler · prompts "
        "up to 256 T5 tokens · no negative prompt · no `::` weights",
        "**sd3** — SD 3.5 Large (tiny, random) · 128×128 · 28 steps · CFG 3.5 · euler · prompts "
        "up to 512 T5 tokens · no `::` weights"]
    assert fields["Drafts"] == ("`--draft` runs each model in at most 8 steps; `Enhance` renders "
                                "a picture at full quality")
