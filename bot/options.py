"""From what a user asked for (options, inline parameters, saved defaults) to job parameters:
the model's family gives the defaults, and refuses what it cannot do (a sampler, a negative
prompt, `::` weights, a prompt longer than it reads); `--draft` runs the job fast."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from bot import limits
from bot.catalogue import Catalogue
from bot.engine.adapters import architecture
from bot.engine.families import Family
from bot.engine.models import ModelSpec
from bot.engine.references import DEFAULT_STYLE_WEIGHT
from bot.engine.samplers import SAMPLERS, accepted, sampler_refusal
from bot.imaging import ImageSizeError, check_pixels, size_for
from bot.prompt import (
    Aspect,
    ParsedPrompt,
    PromptError,
    check_chunks,
    chunks_at_least,
    parse_aspect,
    parse_lora_list,
    parse_prompt,
    tokens_at_least,
    with_lora_tags,
)
from storage import JobRecord, UserSettings

T = TypeVar("T")

DEFAULT_COUNT = 4
DEFAULT_STRENGTH = 0.75
DRAFT_STEPS = 8  # `--draft` without SD_DRAFT_MODEL: the job's model in at most this many steps


@dataclass(frozen=True)
class ImagineOptions:
    """The options of `/imagine` as given (None where not given)."""

    prompt: str
    negative: str | None = None
    aspect: str | None = None
    count: int | None = None
    seed: int | None = None
    steps: int | None = None
    guidance: float | None = None
    model: str | None = None
    strength: float | None = None
    has_image: bool = False
    image_size: tuple[int, int] | None = None  # of the uploaded picture
    lora: str | None = None  # `name:0.8, other`: LoRAs besides the prompt's `<lora:…>` tags
    control: str | None = None  # the ControlNet's control (`canny`…), with a control picture
    has_control_image: bool = False
    has_reference: bool = False  # a reference picture is given (`reference`, /blend)


@dataclass(frozen=True)
class JobParameters:
    prompt: str  # with its `<lora:…>` tags, as stored and shown (AUTOMATIC1111 keeps them too)
    negative: str
    model: ModelSpec
    sampler: str
    aspect: Aspect
    width: int
    height: int
    steps: int
    guidance: float
    seed: int
    count: int
    strength: float | None
    loras: tuple[tuple[str, float], ...] = ()  # LoRA file names and weights, sorted by name
    control: str | None = None  # with a control picture: the ControlNet's control
    control_weight: float | None = None  # --cw
    image_weight: float | None = None  # --iw, with a reference picture
    style_weight: float | None = None  # --sw of a style reference (--sref)
    draft: str | None = None  # a `--draft` job: the model it stands in for (Enhance's)

    def job_fields(self) -> dict[str, Any]:
        """The columns of a job these parameters decide."""
        return {
            "prompt": self.prompt, "negative": self.negative, "model": self.model.name,
            "sampler": self.sampler, "width": self.width, "height": self.height,
            "steps": self.steps, "guidance": self.guidance, "seed": self.seed,
            "count": self.count, "strength": self.strength, "control": self.control,
            "control_weight": self.control_weight, "image_weight": self.image_weight,
            "style_weight": self.style_weight, "draft": self.draft,
        }


def _first(*values: T | None, default: T) -> T:
    """The first value given, else `default`."""
    return next((value for value in values if value is not None), default)


def _check_int(name: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise PromptError(f"`{name}` must be from {low} to {high}, got {value}")
    return value


def _check_float(name: str, value: float, low: float, high: float) -> float:
    if math.isnan(value) or not low <= value <= high:
        raise PromptError(f"`{name}` must be from {low:g} to {high:g}, got {value:g}")
    return value


def random_seed(count: int) -> int:
    """A seed whose `count` consecutive seeds all stay within the allowed range."""
    return random.randint(limits.SEED_MIN, limits.SEED_MAX - count + 1)


def image_aspect(width: int, height: int) -> Aspect:
    """The aspect of an uploaded picture, which must be within the usual 4:1."""
    divisor = math.gcd(width, height)
    aspect = Aspect(width // divisor, height // divisor)
    if max(aspect.ratio, 1 / aspect.ratio) > limits.ASPECT_MAX_RATIO:
        raise PromptError(f"The image is {width}×{height}, wider than 4:1; crop it first")
    return aspect


def check_sampler(name: str, family: Family | None = None) -> str:
    """`name`, if models of `family` (any SD model without one) take that sampler."""
    if family is not None:
        refusal = sampler_refusal(name, family)
        if refusal is not None:
            raise PromptError(refusal)
    elif name not in SAMPLERS:
        raise PromptError(f"Unknown sampler `{name}`. Accepted: {', '.join(SAMPLERS)}")
    return name


def check_family(family: Family, parsed: ParsedPrompt, negative_given: str) -> None:
    """Refuse what the family cannot do with this prompt: `::` weights, a negative prompt,
    a prompt (or negative prompt) longer than its encoder reads. Lengths are counted at least
    (as the text encoder would count them, without it): each word is a T5 token, with the end
    token; CLIP counts as `tokens_at_least`, with its start and end."""
    if not family.weights and len(parsed.parts) > 1:
        raise PromptError(family.weights_refusal())
    if not family.negative and negative_given.strip():
        raise PromptError(family.negative_refusal())
    if not family.sentences:
        return
    texts = {"The prompt": " ".join(part.text for part in parsed.parts),
             "The negative prompt": negative_given}
    for what, text in texts.items():
        tokens = len(text.split()) + 1 if family.t5 else tokens_at_least(text) + 2
        if tokens > family.max_tokens:
            raise PromptError(family.length_refusal(what, tokens, at_least=True))


def resolve_loras(options: ImagineOptions, parsed: ParsedPrompt,
                  catalogue: Catalogue) -> tuple[str, tuple[tuple[str, float], ...]]:
    """The prompt text and its LoRAs, each one checked against LORA_DIR. The `lora` option wins
    over a tag of the same LoRA in the prompt; its LoRAs are written into the text as tags, so
    the job's prompt holds them all (rerolls and variations keep them)."""
    chosen = {name.lower(): (name, weight) for name, weight in parsed.loras}
    if options.lora is not None:
        for name, weight in parse_lora_list(options.lora):
            chosen[name.lower()] = (name, weight)
    if len(chosen) > limits.LORAS_MAX:
        raise PromptError(f"A prompt may use at most {limits.LORAS_MAX} LoRAs, got {len(chosen)}")
    loras = tuple(sorted((catalogue.lora(name), weight) for name, weight in chosen.values()))
    if options.lora is None:
        return parsed.text, loras
    text = with_lora_tags(parsed.text, loras)
    if len(text) > limits.PROMPT_MAX:
        raise PromptError(f"The prompt with its LoRA tags is {len(text)} characters long; at "
                          f"most {limits.PROMPT_MAX} are allowed")
    return text, loras


@dataclass(frozen=True)
class Conditions:
    control: str | None = None
    control_weight: float | None = None
    image_weight: float | None = None
    style_weight: float | None = None


def resolve_conditions(options: ImagineOptions, parsed: ParsedPrompt, model: ModelSpec,
                       catalogue: Catalogue) -> Conditions:
    """The ControlNet and reference of a job: each served for the model, its weights checked;
    a weight given without its picture is refused."""
    control = control_weight = image_weight = style_weight = None
    if options.has_control_image:
        served = catalogue.adapters.controls(architecture(model))
        control = options.control or (served[0] if served else "canny")
        catalogue.check_control(model, control)
        control_weight = _check_float("--cw", _first(parsed.control_weight, default=1.0),
                                      limits.CONTROL_WEIGHT_MIN, limits.CONTROL_WEIGHT_MAX)
    elif options.control is not None:
        raise PromptError("`control` needs a `control_image` to make its map from")
    elif parsed.control_weight is not None:
        raise PromptError("`--cw` only applies with a `control_image`")
    if options.has_reference:
        catalogue.check_reference(model)
        image_weight = _first(parsed.image_weight, default=1.0)
        if parsed.style_weight is not None and not parsed.style_reference:
            raise PromptError("`--sw` weighs a style reference: add `--sref`")
        if parsed.style_reference:
            style_weight = _first(parsed.style_weight, default=DEFAULT_STYLE_WEIGHT)
    else:
        for flag, given in (("--sref", parsed.style_reference),
                            ("--sw", parsed.style_weight is not None),
                            ("--iw", parsed.image_weight is not None)):
            if given:
                raise PromptError(f"`{flag}` only applies with a `reference` picture")
    return Conditions(control, control_weight, image_weight, style_weight)


def resolve(options: ImagineOptions, defaults: UserSettings, catalogue: Catalogue,
            parsed: ParsedPrompt | None = None,
            default_strength: float = DEFAULT_STRENGTH) -> JobParameters:
    """Options given explicitly win over inline `--parameters`, which win over saved defaults,
    which win over the model's own defaults. Raises `PromptError` naming what is wrong."""
    parsed = parsed or parse_prompt(options.prompt)
    # A saved default the server has since removed is no reason to refuse: the default serves.
    saved_model = defaults.model if defaults.model in catalogue.names() else None
    model = catalogue.get(_first(options.model, parsed.model, saved_model, default=None))
    full = model
    draft: str | None = None
    if parsed.draft:
        # The draft model (SD_DRAFT_MODEL) runs it, with its own defaults rather than the saved
        # ones; without one, the model itself in fewer steps. Enhance renders on `model`.
        draft = model.name
        if catalogue.draft is not None:
            model = catalogue.draft
        defaults = replace(defaults, steps=None, sampler=None,
                           guidance=defaults.guidance if model.name == draft else None)
    family = model.family

    if options.aspect is not None:
        aspect = parse_aspect(options.aspect, "aspect")
    elif parsed.aspect is not None:
        aspect = parsed.aspect
    elif options.image_size is not None:
        aspect = image_aspect(*options.image_size)
    elif defaults.aspect:
        aspect = parse_aspect(defaults.aspect, "aspect")
    else:
        aspect = Aspect(1, 1)
    width, height = size_for(aspect, family.native_side, family.multiple)
    try:
        check_pixels(width, height)
    except ImageSizeError as error:
        raise PromptError(str(error)) from None

    count = _check_int("count", _first(options.count, parsed.count, defaults.count,
                                       default=DEFAULT_COUNT), limits.COUNT_MIN, limits.COUNT_MAX)
    own_steps = family.steps
    if draft is not None and catalogue.draft is None:
        own_steps = min(DRAFT_STEPS, family.steps)
    steps = _check_int("steps", _first(options.steps, parsed.steps, defaults.steps,
                                       default=own_steps), limits.STEPS_MIN, limits.STEPS_MAX)
    guidance = _check_float("guidance", _first(options.guidance, parsed.guidance,
                                               defaults.guidance, default=family.guidance),
                            limits.GUIDANCE_MIN, limits.GUIDANCE_MAX)
    seed_given = _first(options.seed, parsed.seed, default=None)
    if seed_given is None:
        seed = random_seed(count)
    else:
        seed = _check_int("seed", seed_given, limits.SEED_MIN, limits.SEED_MAX)
        if seed + count - 1 > limits.SEED_MAX:
            # image i uses seed + i, and every seed shown must be one a user can type again
            raise PromptError(f"`seed` must be at most {limits.SEED_MAX - count + 1} for "
                              f"{count} images: seeds go up to {limits.SEED_MAX}")
    # A saved sampler this family does not take is left out, as a removed model is; one asked
    # for in the prompt is refused, naming those it takes.
    saved_sampler = defaults.sampler if defaults.sampler in accepted(family) else None
    sampler = check_sampler(_first(parsed.sampler, saved_sampler, default=family.sampler),
                            family)

    strength_given = _first(options.strength, parsed.strength, default=None)
    if strength_given is not None and not options.has_image:
        raise PromptError("`strength` only applies when you give an `image` to start from")
    strength = None
    if options.has_image:
        strength = _check_float("strength", _first(strength_given, default=default_strength),
                                limits.STRENGTH_MIN, limits.STRENGTH_MAX)

    # A saved negative prompt is for the families that take one. A draft's prompt must suit
    # the model it stands in for too (Enhance renders it there).
    saved_negative = defaults.negative if family.negative and full.family.negative else None
    negatives = [_first(options.negative, saved_negative, default=""), parsed.negative or ""]
    negative = ", ".join(text.strip() for text in negatives if text.strip())
    check_chunks("The negative prompt", chunks_at_least(negative), parts=False)
    for checked in dict.fromkeys((family, full.family)):
        check_family(checked, parsed, negative)
    text, loras = resolve_loras(options, parsed, catalogue)
    conditions = resolve_conditions(options, parsed, model, catalogue)
    return JobParameters(
        prompt=text,
        negative=negative,
        model=model,
        sampler=sampler,
        aspect=aspect,
        width=width,
        height=height,
        steps=steps,
        guidance=guidance,
        seed=seed,
        count=count,
        strength=strength,
        loras=loras,
        control=conditions.control,
        control_weight=conditions.control_weight,
        image_weight=conditions.image_weight,
        style_weight=conditions.style_weight,
        draft=draft,
    )


# /blend's `dimensions` and the aspect each one gives (SPEC §3.2)
BLEND_DIMENSIONS = {"portrait": "2:3", "square": "1:1", "landscape": "3:2"}


def check_blend_count(pictures: int) -> None:
    if not limits.BLEND_MIN <= pictures <= limits.BLEND_MAX:
        raise PromptError(f"`/blend` mixes {limits.BLEND_MIN} to {limits.BLEND_MAX} pictures, "
                          f"got {pictures}")


def resolve_blend(dimensions: str | None, pictures: int, defaults: UserSettings,
                  catalogue: Catalogue) -> JobParameters:
    """`/blend`'s parameters: four pictures of the user's default model (if it still exists)
    mixing `pictures` pictures, no text, at `dimensions` (square when not given)."""
    check_blend_count(pictures)
    saved_model = defaults.model if defaults.model in catalogue.names() else None
    model = catalogue.get(saved_model)
    catalogue.check_reference(model, "`/blend`")
    family = model.family
    aspect = parse_aspect(BLEND_DIMENSIONS[dimensions or "square"], "dimensions")
    width, height = size_for(aspect, family.native_side, family.multiple)
    saved_sampler = defaults.sampler if defaults.sampler in accepted(family) else None
    return JobParameters(
        prompt="", negative=(defaults.negative if family.negative else None) or "", model=model,
        sampler=check_sampler(_first(saved_sampler, default=family.sampler), family),
        aspect=aspect, width=width, height=height,
        steps=_first(defaults.steps, default=family.steps),
        guidance=_first(defaults.guidance, default=family.guidance),
        seed=random_seed(DEFAULT_COUNT), count=DEFAULT_COUNT, strength=None, image_weight=1.0)


def remix_text(job: JobRecord) -> str:
    """A job's prompt and parameters as a user would type them, to edit in the remix modal (a
    draft names the model it stands in for, and `--draft`)."""
    text = (f"{job.prompt} --steps {job.steps} --cfg {job.guidance:g} --sampler {job.sampler}"
            f" --model {job.draft or job.model}")
    if job.control_weight is not None:
        text += f" --cw {job.control_weight:g}"
    if job.image_weight is not None:
        text += f" --iw {job.image_weight:g}"
    if job.style_weight is not None:
        text += f" --sref --sw {job.style_weight:g}"
    return text + " --draft" if job.draft is not None else text


def resolve_remix(text: str, negative: str, job: JobRecord, catalogue: Catalogue, *,
                  count: int, strength: float | None) -> JobParameters:
    """Parameters for a job continuing from `job`, as edited in the remix modal: what the text
    gives wins, the rest comes from `job` (its size stays unless `--ar` says otherwise)."""
    defaults = UserSettings(job.user_id, steps=job.steps, guidance=job.guidance, model=job.model,
                            count=count, sampler=job.sampler)
    options = ImagineOptions(prompt=text, negative=negative, has_image=strength is not None,
                             image_size=(job.width, job.height), control=job.control,
                             has_control_image=job.control_image is not None,
                             has_reference=job.reference_images is not None)
    return resolve(options, defaults, catalogue,
                   default_strength=strength if strength is not None else DEFAULT_STRENGTH)
