"""Every model a team uses, through the real bot: switching models (SDXL, a single-file
checkpoint), every sampler, LoRAs, long and weighted prompts, img2img on SDXL."""

from __future__ import annotations

import asyncio
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bot.engine import loras
from bot.engine.loras import LoraFolder
from bot.engine.samplers import SAMPLERS
from bot.imaging import size_for
from bot.prompt import Aspect
from tests.double import Message
from tests.e2e.conftest import (
    Atelier,
    button,
    finished,
    image_size,
    job_id_of,
    pixels,
    png_info,
    rows,
)
from tests.models import ModelFiles

pytestmark = pytest.mark.e2e

# The tiny models read one token per letter: these words are 121 tokens, past CLIP's 77.
LONG_WORDS = ["a", "lighthouse", "on", "a", "rocky", "cape", "at", "dusk", "with", "gulls",
              "over", "grey", "waves", "and", "a", "small", "red", "boat", "near", "the",
              "harbour", "wall", "under", "heavy", "clouds", "in", "early", "spring", "painted"]


def long_prompt(last: str) -> str:
    return " ".join([*LONG_WORDS, last])


async def result(atelier: Atelier, prompt: str, **options: object) -> Message:
    message = await finished(await atelier.imagine(prompt, **options))
    assert "Failed" not in message.content, message.content
    return message


def model_of(atelier: Atelier, message: Message) -> str:
    [job] = rows(atelier, "SELECT model FROM jobs WHERE id = ?", job_id_of(message))
    return str(job["model"])


def mean_difference(a: Message, b: Message) -> float:
    return float(np.abs(pixels(a.attachment_bytes()) - pixels(b.attachment_bytes())).mean())


async def refusal(atelier: Atelier, prompt: str, **options: object) -> str:
    handle = await atelier.imagine(prompt, **options)
    response = await handle.response()
    assert response.type == 4 and response.ephemeral
    return str(response.data["content"])


async def test_the_model_option_switches_the_model(atelier: Atelier, model_files: ModelFiles,
                                                   hub_cache: Path) -> None:
    await atelier.restart(sd_models=(("xl", str(model_files.xl)),
                                     ("checkpoint", str(model_files.sd1_file))))
    choices = await atelier.double.autocomplete("imagine", {"prompt": "a fox"}, focused="model")
    assert [(c["name"], c["value"]) for c in choices] == [
        ("tiny (tiny (random, for tests))", "tiny"), ("xl (SDXL)", "xl"),
        ("checkpoint (SD 1.x)", "checkpoint")]

    tiny = await result(atelier, "a red fox --seed 3 --n 1 --steps 3")
    xl = await result(atelier, "a red fox --seed 3 --n 1 --steps 3", model="xl")
    checkpoint = await result(atelier, "a red fox --seed 3 --n 1 --steps 2 --model checkpoint")
    for message, name, size in ((tiny, "tiny", 128), (xl, "xl", 128), (checkpoint, "checkpoint",
                                                                        512)):
        assert model_of(atelier, message) == name
        parameters = png_info(message.attachment_bytes())["parameters"]
        assert parameters.endswith(f"Model: {name}"), parameters
        assert image_size(message.attachment_bytes()) == (size, size)  # the model's own area
    assert mean_difference(tiny, xl) > 1

    info = await atelier.double.slash("info", user=atelier.double.alice)
    [embed] = (await info.original()).embeds
    models = next(f["value"] for f in embed["fields"] if f["name"] == "Models")
    assert "**xl** — SDXL · 128×128 · 30 steps · CFG 6" in models
    assert "**checkpoint** — SD 1.x · 512×512" in models


async def test_every_sampler_runs(atelier: Atelier) -> None:
    for name, sampler in SAMPLERS.items():
        message = await result(atelier, f"a red fox --sampler {name} --steps 2 --n 1 --seed 1")
        [job] = rows(atelier, "SELECT sampler FROM jobs WHERE id = ?", job_id_of(message))
        assert job["sampler"] == name
        assert f"Sampler: {sampler.label}," in png_info(message.attachment_bytes())["parameters"]
    assert await refusal(atelier, "a red fox --sampler heun") == (
        "❌ Unknown sampler `heun`. Accepted for tiny (random, for tests): `euler`, `euler_a`, "
        "`dpm++_2m`, `dpm++_2m_karras`, `dpm++_sde`, `ddim`, `unipc`, `lcm`")


async def test_a_lora_changes_the_picture_and_its_weight_zero_does_not(
        atelier: Atelier, model_files: ModelFiles) -> None:
    await atelier.restart(lora_dir=model_files.loras)
    plain = await result(atelier, "a red fox --seed 5 --n 1 --steps 4")
    lora = await result(atelier, "a red fox <lora:detail:1> --seed 5 --n 1 --steps 4")
    zero = await result(atelier, "a red fox <lora:detail:0> --seed 5 --n 1 --steps 4")
    assert mean_difference(plain, lora) > 1
    assert mean_difference(plain, zero) == 0
    # the `lora` option gives the same as the tag, and the job keeps its LoRA as a tag
    option = await result(atelier, "a red fox --seed 5 --n 1 --steps 4", lora="Detail")
    assert mean_difference(option, lora) == 0
    [job] = rows(atelier, "SELECT prompt FROM jobs WHERE id = ?", job_id_of(option))
    assert job["prompt"] == "a red fox <lora:detail:1.0>"
    assert png_info(option.attachment_bytes())["parameters"].startswith(
        "a red fox <lora:detail:1.0>\n")

    choices = await atelier.double.autocomplete(
        "imagine", {"prompt": "a fox", "lora": "detail:0.5, st"}, focused="lora")
    assert [c["value"] for c in choices] == ["detail:0.5, style"]
    choices = await atelier.double.autocomplete("imagine", {"prompt": "a fox"}, focused="lora")
    assert [c["value"] for c in choices] == ["detail", "style", "xl-detail"]

    jobs_before = rows(atelier, "SELECT count(*) FROM jobs")[0][0]
    assert await refusal(atelier, "a red fox <lora:nope>") == (
        "❌ Unknown LoRA `nope`. Accepted: detail, style, xl-detail")
    assert "without folders" in await refusal(atelier, "a red fox <lora:../../secret>")
    assert "without folders" in await refusal(atelier, "a red fox", lora="/etc/passwd")
    assert rows(atelier, "SELECT count(*) FROM jobs")[0][0] == jobs_before


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


async def test_lora_dir_is_read_off_the_event_loop_and_new_files_work_at_once(
        atelier: Atelier, model_files: ModelFiles, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "loras"
    folder.mkdir()
    shutil.copy(model_files.loras / "detail.safetensors", folder / "detail.safetensors")
    await atelier.restart(lora_dir=folder)
    reads: list[bool] = []  # for each look at the folder: was it on the event loop?
    files, listing = LoraFolder.files, loras.lora_files

    def watched_files(self: LoraFolder) -> dict[str, Path]:
        reads.append(_on_event_loop())
        return files(self)

    def watched_listing(where: Path | str | None) -> dict[str, Path]:
        reads.append(_on_event_loop())
        return listing(where)

    monkeypatch.setattr(LoraFolder, "files", watched_files)
    monkeypatch.setattr(loras, "lora_files", watched_listing)

    detail = await result(atelier, "a red fox <lora:detail> --seed 5 --n 1 --steps 2")
    choices = await atelier.double.autocomplete("imagine", {"prompt": "a fox"}, focused="lora")
    assert [c["value"] for c in choices] == ["detail"]
    # a LoRA added while the bot runs is usable at once, by /imagine and by a remix
    shutil.copy(model_files.loras / "style.safetensors", folder / "later.safetensors")
    later = await result(atelier, "a red fox <lora:later> --seed 5 --n 1 --steps 2")
    assert mean_difference(detail, later) > 1
    assert atelier.bot is not None
    from storage import UserSettings
    await atelier.bot.repo.save_settings(UserSettings(atelier.double.alice.id, remix=True))
    (folder / "latest.safetensors").symlink_to(folder / "later.safetensors")
    click = await atelier.double.click(later, button(later, "🔄"))
    await click.response()
    remixed = await finished(await atelier.double.submit_modal(
        click.modal["custom_id"], {"prompt": "a red fox <lora:latest> --seed 5 --steps 2"}))
    assert mean_difference(remixed, later) == 0
    assert reads and not any(reads), reads


async def test_a_long_prompt_is_not_truncated(atelier: Atelier, model_files: ModelFiles) -> None:
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(model_files.tiny / "tokenizer")
    dusk, dawn = long_prompt("sunset"), long_prompt("morning")
    ids = [tokenizer(text, add_special_tokens=False, verbose=False).input_ids
           for text in (dusk, dawn)]
    assert len(ids[0]) == 121 + len("sunset") and ids[0][:121] == ids[1][:121]
    # (cut at 77 tokens, as a plain pipeline does, these two prompts would be one picture)

    first = await result(atelier, f"{dusk} --seed 9 --n 1 --steps 4")
    second = await result(atelier, f"{dawn} --seed 9 --n 1 --steps 4")
    assert mean_difference(first, second) > 0.1  # the same prompt and seed differ by 0
    headline, note = first.content.split("\n")
    assert headline.endswith(f"· seed 9 · job `{job_id_of(first)}`")
    assert note == "-# long prompt: encoded in 2 chunks of 75 tokens, none of it cut off"
    short = await result(atelier, "a red fox --seed 9 --n 1 --steps 4")
    assert "\n" not in short.content

    weighted = await result(atelier, "a red (fox:1.5) --seed 9 --n 1 --steps 4")
    assert mean_difference(weighted, short) > 0.5


async def test_img2img_from_an_upload_on_sdxl(atelier: Atelier, model_files: ModelFiles) -> None:
    await atelier.restart(sd_models=(("xl", str(model_files.xl)),))
    upload = io.BytesIO()
    Image.new("RGB", (600, 300), (40, 90, 200)).save(upload, format="PNG")
    handle = await atelier.double.slash(
        "imagine", {"prompt": "a fox at sea", "model": "xl", "strength": 0.6, "count": 2,
                    "steps": 6},
        user=atelier.double.alice, attachments={"image": ("start.png", upload.getvalue(),
                                                          "image/png")})
    message = await finished(handle)
    width, height = size_for(Aspect(2, 1), 128)
    assert image_size(message.attachment_bytes()) == (2 * width, height)  # two side by side
    [job] = rows(atelier, "SELECT model, width, height, strength, init_image FROM jobs "
                          "WHERE id = ?", job_id_of(message))
    assert (job["model"], job["width"], job["height"], job["strength"]) == ("xl", width, height,
                                                                             0.6)
    assert job["init_image"]
