"""What each family gives a job and refuses (`resolve`), `--draft` and `Enhance`, and the settings
that fit models to cards (SD_DTYPE per model, SD_OFFLOAD, SD_NO_T5, SD_DRAFT_MODEL)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from bot.catalogue import Catalogue
from bot.config import ConfigError, load_settings
from bot.engine.models import FAMILIES, ModelSpec, describe
from bot.jobs import JobRefused, Origin
from bot.jobs.making import enhanced, new_job, rerolled, varied
from bot.options import ImagineOptions, JobParameters, remix_text, resolve
from bot.prompt import PromptError, parse_prompt
from storage import ImageRecord, JobKind, UserSettings

TINY = describe("tiny", "tiny")
FLUX = ModelSpec("flux", "black-forest-labs/FLUX.1-schnell", FAMILIES["flux-schnell"])
DEV = ModelSpec("dev", "black-forest-labs/FLUX.1-dev", FAMILIES["flux-dev"])
SD35 = ModelSpec("sd35", "stabilityai/stable-diffusion-3.5-large", FAMILIES["sd35-large"])
XL = ModelSpec("xl", "stabilityai/stable-diffusion-xl-base-1.0", FAMILIES["sdxl"], sdxl=True)
TURBO = ModelSpec("turbo", "stabilityai/sdxl-turbo",
                  replace(FAMILIES["turbo"], label="SDXL-Turbo"), sdxl=True)
NO_DEFAULTS = UserSettings(user_id=1)
ORIGIN = Origin(guild_id=1, channel_id=2, user_id=30, nsfw_allowed=False, application_id=4,
                interaction_token="token", attachment_limit=None)


def catalogue(draft: str | None = None) -> Catalogue:
    return Catalogue([XL, FLUX, DEV, SD35, TURBO, TINY], draft=draft)


def params(prompt: str, defaults: UserSettings = NO_DEFAULTS, draft: str | None = None,
           **options: object) -> JobParameters:
    return resolve(ImagineOptions(prompt=prompt, **options),  # type: ignore[arg-type]
                   defaults, catalogue(draft))


def error(prompt: str, defaults: UserSettings = NO_DEFAULTS, **options: object) -> str:
    with pytest.raises(PromptError) as caught:
        params(prompt, defaults, **options)
    return str(caught.value)


# ---- defaults and refusals ----------------------------------------------------------------------

@pytest.mark.parametrize(
    ("model", "size", "steps", "guidance", "sampler"),
    [("flux", (1360, 768), 4, 0.0, "euler"), ("dev", (1360, 768), 28, 3.5, "euler"),
     ("sd35", (1360, 768), 28, 3.5, "euler"), ("turbo", (680, 384), 4, 0.0, "euler_a")],
)
def test_each_family_gives_its_defaults_and_sizes_in_its_multiple(
        model: str, size: tuple[int, int], steps: int, guidance: float, sampler: str) -> None:
    job = params(f"a fox --model {model} --ar 16:9")
    assert ((job.width, job.height), job.steps, job.guidance, job.sampler) == (
        size, steps, guidance, sampler)
    assert job.width % job.model.family.multiple == job.height % job.model.family.multiple == 0


def test_an_sd_sampler_on_flux_is_refused_naming_the_one_it_takes() -> None:
    assert error("a fox --model flux --sampler dpm++_2m_karras") == (
        "FLUX.1 [schnell] is a flow-matching model: it takes the sampler `euler` (flow-matching "
        "Euler), not `dpm++_2m_karras`")
    assert error("a fox --model sd35 --sampler heun") == (
        "Unknown sampler `heun`. Accepted for SD 3.5 Large: `euler`")
    assert params("a fox --model flux --sampler euler").sampler == "euler"


def test_saved_settings_a_family_does_not_take_are_left_out() -> None:
    saved = UserSettings(user_id=1, sampler="dpm++_2m_karras", negative="blurry")
    flux = params("a fox --model flux", saved)
    assert (flux.sampler, flux.negative) == ("euler", "")
    sd35 = params("a fox --model sd35", saved)
    assert (sd35.sampler, sd35.negative) == ("euler", "blurry")  # SD 3.5 takes negatives
    xl = params("a fox --model xl", saved)
    assert (xl.sampler, xl.negative) == ("dpm++_2m_karras", "blurry")


def test_flux_refuses_a_negative_prompt_and_t5_families_refuse_weights() -> None:
    refusal = ("FLUX.1 [dev] takes no negative prompt (it is guidance-distilled): leave out "
               "`negative` and `--no`, and describe only what should be in the picture")
    assert error("a fox --model dev --no fog") == refusal
    assert error("a fox", model="dev", negative="fog") == refusal
    assert error("a fox::2 a hen --model sd35") == (
        "SD 3.5 Large reads the prompt as one sentence: `::` weights do not apply to it; write "
        "the parts as one prompt")
    assert params("a fox --model sd35 --no fog").negative == "fog"


def test_prompt_length_is_counted_for_t5() -> None:
    # schnell reads 256 T5 tokens: 300 words are at least 301 (with the end token)
    assert error(" ".join(["a"] * 300) + " --model flux") == (
        "The prompt is at least 301 tokens long; FLUX.1 [schnell] reads at most 256 T5 tokens")
    assert params(" ".join(["a"] * 300) + " --model dev").model is DEV  # 512
    small = ModelSpec("small", "x", FAMILIES["sd35-large"].without_t5())
    with pytest.raises(PromptError, match="at most 77 CLIP tokens"):
        resolve(ImagineOptions(prompt=" ".join(["a"] * 80)), NO_DEFAULTS, Catalogue([small]))


# ---- --draft and Enhance ------------------------------------------------------------------------

def test_draft_is_a_flag_without_a_value() -> None:
    parsed = parse_prompt("a fox --draft --ar 3:2")
    assert parsed.draft and parse_prompt(parsed.to_text()) == parsed
    with pytest.raises(PromptError, match="`--draft` takes no value, got `yes`"):
        parse_prompt("a fox --draft yes")
    assert not parse_prompt("a fox").draft


def test_a_draft_runs_its_model_in_8_steps_with_its_sampler() -> None:
    saved = UserSettings(user_id=1, steps=50, sampler="ddim", guidance=9.0)
    job = params("a fox --model xl --draft", saved)
    assert (job.model, job.steps, job.sampler, job.guidance, job.draft) == (
        XL, 8, "dpm++_2m_karras", 9.0, "xl")
    # few-step models run as they are; steps asked for in the prompt still win
    assert params("a fox --model turbo --draft").steps == 4
    assert params("a fox --model xl --draft --steps 12").steps == 12
    assert params("a fox --model xl").draft is None


def test_a_draft_runs_on_sd_draft_model_with_its_defaults() -> None:
    job = params("a fox --model flux --draft --ar 16:9", draft="turbo")
    assert (job.model, job.steps, job.sampler, job.guidance, job.draft) == (
        TURBO, 4, "euler_a", 0.0, "flux")
    assert (job.width, job.height) == (680, 384)  # the draft model's area
    # its prompt must suit the model it stands in for, where Enhance renders it
    with pytest.raises(PromptError, match="FLUX.1 \\[schnell\\] takes no negative prompt"):
        params("a fox --model flux --draft --no fog", draft="turbo")


def draft_job(model: str = "xl", draft: str = "xl", **fields: object) -> tuple[object, ...]:
    job = replace(new_job(ORIGIN, params(f"a fox --model {draft} --draft --seed 40",
                                         draft=None if model == draft else model)), **fields)
    image = ImageRecord(job.id, 2, 42, "ab/ab.png", "ab" * 32, job.width, job.height, 100)
    return job, image


def test_enhance_renders_a_draft_picture_on_its_model_from_the_same_seed() -> None:
    job, image = draft_job()
    assert job.draft == "xl" and job.steps == 8  # type: ignore[attr-defined]
    better = enhanced(ORIGIN, job, image, XL, 0.5)  # type: ignore[arg-type]
    assert (better.kind, better.mode, better.count, better.seed, better.strength) == (
        JobKind.ENHANCE, "img2img", 1, 42, 0.5)
    assert (better.model, better.steps, better.sampler, better.draft) == (
        "xl", 30, "dpm++_2m_karras", None)
    assert (better.parent_job, better.parent_index, better.init_image) == (
        job.id, 3, image.sha256)  # type: ignore[attr-defined]
    assert (better.width, better.height) == (image.width, image.height)


def test_enhance_of_a_draft_model_picture_takes_the_full_models_area() -> None:
    job, image = draft_job(model="turbo", draft="flux")
    assert (job.model, job.width, job.draft) == ("turbo", 512, "flux")  # type: ignore[attr-defined]
    better = enhanced(ORIGIN, job, image, FLUX, 0.5)  # type: ignore[arg-type]
    assert (better.model, better.width, better.height, better.steps, better.guidance) == (
        "flux", 1024, 1024, 4, 0.0)


def test_jobs_made_from_a_draft_are_drafts_but_only_drafts_are_enhanced() -> None:
    job, image = draft_job()
    assert rerolled(ORIGIN, job).draft == "xl"  # type: ignore[arg-type]
    assert varied(ORIGIN, job, image, 0.7, XL.family).draft == "xl"  # type: ignore[arg-type]
    with pytest.raises(JobRefused, match="Only the pictures of a `--draft` job"):
        enhanced(ORIGIN, replace(job, draft=None), image, XL, 0.5)  # type: ignore[type-var]
    assert remix_text(job).endswith("--model xl --draft")  # type: ignore[arg-type]


# ---- settings -----------------------------------------------------------------------------------

def test_card_settings(tmp_path: Path) -> None:
    env = {"DISCORD_TOKEN": "t", "SD_MODEL": "tiny", "SD_MODELS": "sd35=tiny-sd3,flux=tiny-flux",
           "SD_DTYPE": "float16,flux=bfloat16", "SD_OFFLOAD": "model", "SD_NO_T5": "sd35",
           "SD_DRAFT_MODEL": "default", "ENHANCE_STRENGTH": "0.4"}
    settings = load_settings(env, env_file=tmp_path / "none")
    assert (settings.sd_dtype, settings.sd_dtypes, settings.sd_offload) == (
        "float16", (("flux", "bfloat16"),), "model")
    assert (settings.sd_no_t5, settings.sd_draft_model, settings.enhance_strength) == (
        ("sd35",), "default", 0.4)
    models = Catalogue.from_settings(settings)
    assert models.get("flux").dtype == "bfloat16" and models.get("tiny").dtype is None
    assert models.get("sd35").family.label == "SD 3.5 Large (tiny, random) without T5"
    assert models.draft is models.get("tiny")


@pytest.mark.parametrize(
    ("env", "message"),
    [({"SD_OFFLOAD": "gpu"}, "SD_OFFLOAD must be one of none, model, sequential, got 'gpu'"),
     ({"SD_DTYPE": "float16,half"}, "SD_DTYPE must be one of auto, float16, bfloat16, float32, "
                                    "and/or model=dtype entries"),
     ({"SD_NO_T5": "flux"}, "SD_NO_T5 names the model 'flux': FLUX.1 [schnell] (tiny, random) "
                            "needs its T5 text encoder (only SD 3 and 3.5 models run without it)"),
     ({"SD_DRAFT_MODEL": "fast"}, "SD_DRAFT_MODEL names the model 'fast', which is not one of "
                                  "tiny, flux (or default)"),
     ({"SD_DTYPE": "other=float32"}, "SD_DTYPE names the model 'other'")],
)
def test_bad_card_settings_name_the_variable(tmp_path: Path, env: dict[str, str],
                                             message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings = load_settings({"DISCORD_TOKEN": "t", "SD_MODEL": "tiny",
                                  "SD_MODELS": "flux=tiny-flux", **env},
                                 env_file=tmp_path / "none")
        Catalogue.from_settings(settings)
    assert str(caught.value).startswith(message)
