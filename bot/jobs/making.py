"""Making jobs: a new `/imagine` job, a `/blend` and a `/describe`, and jobs made from another
one — rerolls, variations, upscales, the edits of SPEC §3.1 (Zoom Out, Pan, Make Square, Vary
(Region)) and Enhance.

Pure functions of records, parameters and geometry: nothing here saves, queues or answers.
Every job made from another gets fresh seeds (but Enhance: the picture's own) and is shown to
whoever asked for it. A job made from a draft is a draft too, but Enhance's."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import discord

from bot import limits
from bot.access import nsfw_allowed
from bot.engine import canvas
from bot.engine.models import Family, ModelSpec
from bot.engine.types import Mode
from bot.imaging import ImageSizeError, check_pixels
from bot.jobs.policy import JobRefused
from bot.options import JobParameters, random_seed
from storage import ImageRecord, JobKind, JobRecord, JobStatus, new_job_id

EDIT_COUNT = 4  # pictures an edit makes (SPEC §3.1)
# How far the new area of an edit moves from its starting canvas: all the way (it is new).
EDIT_STRENGTH = 1.0
# Zoom Out's factors: the buttons', and what `--zoom` accepts in Custom Zoom.
ZOOM_MIN, ZOOM_MAX = 1.0, 2.0
PAN_ARROWS = {"left": "⬅️", "right": "➡️", "up": "⬆️", "down": "⬇️"}


@dataclass(frozen=True)
class Origin:
    """Who asked for a job, where, and the token to answer them with."""

    guild_id: int | None
    channel_id: int
    user_id: int
    nsfw_allowed: bool
    application_id: int | None
    interaction_token: str | None
    attachment_limit: int | None

    @classmethod
    def of(cls, interaction: discord.Interaction[Any]) -> Origin:
        return cls(
            guild_id=interaction.guild_id,
            channel_id=interaction.channel_id or 0,
            user_id=interaction.user.id,
            nsfw_allowed=nsfw_allowed(interaction),
            application_id=interaction.application_id,
            interaction_token=interaction.token,
            attachment_limit=interaction.filesize_limit,
        )

    def fields(self) -> dict[str, Any]:
        return asdict(self)


def new_job(origin: Origin, params: JobParameters, *, init_image: str | None = None,
            mask_image: str | None = None, control_image: str | None = None,
            references: tuple[str, ...] = (), kind: JobKind = JobKind.IMAGINE) -> JobRecord:
    """A new `/imagine` job: from noise, from an uploaded picture, or redrawing the white of an
    uploaded mask over it; held to a control picture's map, steered by reference pictures
    (`/blend`: only by them)."""
    mode = Mode.TXT2IMG if init_image is None else Mode.IMG2IMG
    if mask_image is not None:
        mode = Mode.INPAINT
    return JobRecord(id=new_job_id(), kind=kind, created_at=time.time(),
                     mode=str(mode), init_image=init_image, mask_image=mask_image,
                     edit="mask" if mask_image is not None else None,
                     control_image=control_image,
                     reference_images=",".join(references) if references else None,
                     **params.job_fields(), **origin.fields())


def described(origin: Origin, picture: str, width: int, height: int,
              model: str) -> JobRecord:
    """`/describe`: prompt suggestions for an uploaded picture (of width×height), from the
    captioning model `model`."""
    return JobRecord(id=new_job_id(), kind=JobKind.DESCRIBE, created_at=time.time(),
                     prompt="", negative="", model=model, sampler="", width=width,
                     height=height, steps=0, guidance=0.0, seed=random_seed(1), count=4,
                     init_image=picture, **origin.fields())


def described_again(origin: Origin, parent: JobRecord) -> JobRecord:
    """`🔄` on a `/describe`: new suggestions for the same picture."""
    return replace(derived(origin, parent, JobKind.DESCRIBE, count=parent.count,
                           init_image=parent.init_image), mode=str(Mode.TXT2IMG))


def derived(origin: Origin, parent: JobRecord, kind: JobKind, *, count: int,
            index: int | None = None, mode: Mode = Mode.TXT2IMG, init_image: str | None = None,
            strength: float | None = None, width: int | None = None, height: int | None = None,
            mask_image: str | None = None, box: str | None = None,
            edit: str | None = None, conditions: bool = True) -> JobRecord:
    """A new job continuing from `parent` (image `index`, from 1), with fresh seeds; its prompt
    and parameters are the parent's unless given. It keeps the parent's control and references
    unless `conditions` is False (a job on another canvas)."""
    job = replace(
        parent,
        id=new_job_id(),
        kind=kind,
        parent_job=parent.id,
        parent_index=index,
        seed=random_seed(count),
        count=count,
        mode=str(mode),
        init_image=init_image,
        mask_image=mask_image,
        box=box,
        edit=edit,
        strength=strength,
        width=parent.width if width is None else width,
        height=parent.height if height is None else height,
        status=JobStatus.QUEUED,
        error=None,
        message_id=None,
        created_at=time.time(),
        started_at=None,
        finished_at=None,
        delivered_at=None,
        deleted_at=None,
        delivery_attempts=0,
        delivery_error=None,
        control_map=None,  # made again when it runs
        suggestions=None,
        **origin.fields(),
    )
    if conditions:
        return job
    return replace(job, control=None, control_image=None, control_weight=None,
                   reference_images=None, image_weight=None, style_weight=None)


def rerolled(origin: Origin, parent: JobRecord) -> JobRecord:
    """`🔄`: the same job again with fresh seeds; an edit repeats itself on the same picture,
    with the same mask and canvas."""
    return derived(origin, parent, JobKind.REROLL, count=parent.count, mode=Mode(parent.mode),
                   init_image=parent.init_image, strength=parent.strength,
                   mask_image=parent.mask_image, box=parent.box, edit=parent.edit)


def varied(origin: Origin, parent: JobRecord, image: ImageRecord, strength: float,
           family: Family) -> JobRecord:
    """`V<n>`, `Vary (Subtle)`, `Vary (Strong)`: four pictures from image n at `strength`.
    Variations of an upscaled picture are made at the model's own size, not at twice it (four
    of those would be slow, and tiled)."""
    width, height = parent.width, parent.height
    if parent.kind is JobKind.UPSCALE:
        width, height = canvas.size_for(parent.width / parent.height, family.native_side,
                                        family.multiple)
    return derived(origin, parent, JobKind.VARIATION, count=4, index=image.index + 1,
                   mode=Mode.IMG2IMG, init_image=image.sha256, strength=strength,
                   width=width, height=height)


def upscaled(origin: Origin, parent: JobRecord, image: ImageRecord,
             strength: float) -> JobRecord:
    """`Upscale (2x)`: the picture at twice its size, refined by a light img2img pass."""
    width, height = image.width * 2, image.height * 2
    _check_size("Upscale (2x)", width, height)
    return derived(origin, parent, JobKind.UPSCALE, count=1, index=image.index + 1,
                   mode=Mode.IMG2IMG, init_image=image.sha256, strength=strength,
                   width=width, height=height, conditions=False)


def enhanced(origin: Origin, parent: JobRecord, image: ImageRecord, full: ModelSpec,
             strength: float) -> JobRecord:
    """`Enhance`: a draft's picture at full quality, from the same seed: img2img at `strength`
    on the model the draft stands in for (`full`), at its steps and sampler. The picture keeps
    its size on the same model; another model gets its own area, at the picture's aspect."""
    if parent.draft is None:
        raise JobRefused("Only the pictures of a `--draft` job can be enhanced")
    family = full.family
    width, height = image.width, image.height
    guidance = parent.guidance
    if full.name != parent.model:  # a draft model ran it: the full model's own settings
        width, height = canvas.size_for(image.width / image.height, family.native_side,
                                        family.multiple)
        guidance = family.guidance
    _check_size("Enhance", width, height)
    job = derived(origin, parent, JobKind.ENHANCE, count=1, index=image.index + 1,
                  mode=Mode.IMG2IMG, init_image=image.sha256, strength=strength, width=width,
                  height=height)
    return replace(job, seed=image.seed, model=full.name, steps=family.steps,
                   sampler=family.sampler, guidance=guidance, draft=None)


def remixed(job: JobRecord, params: JobParameters) -> JobRecord:
    """`job` with what the user wrote in the remix modal (an edit keeps its canvas and size)."""
    fields = params.job_fields()
    if job.mode == Mode.TXT2IMG:
        fields["strength"] = None
    if job.edit is not None:
        for kept in ("width", "height", "strength", "count"):
            fields.pop(kept)
    return replace(job, **fields)


# ---- edits (SPEC §3.1) --------------------------------------------------------------------------

def _edited(origin: Origin, parent: JobRecord, image: ImageRecord, kind: JobKind,
            sheet: canvas.Canvas, edit: str) -> JobRecord:
    return derived(origin, parent, kind, count=EDIT_COUNT, index=image.index + 1,
                   mode=Mode.INPAINT, init_image=image.sha256, strength=EDIT_STRENGTH,
                   width=sheet.width, height=sheet.height, box=str(sheet.box), edit=edit,
                   conditions=False)


def zoomed(origin: Origin, parent: JobRecord, image: ImageRecord, factor: float,
           family: Family) -> JobRecord:
    """`Zoom Out 2x` / `1.5x` / `Custom Zoom`: the picture smaller in the middle of a canvas of
    its size, the border new."""
    if not ZOOM_MIN <= factor <= ZOOM_MAX:
        raise JobRefused(f"`--zoom` must be from {ZOOM_MIN:g} to {ZOOM_MAX:g}, got {factor:g}")
    sheet = canvas.zoom_out(image.width, image.height, factor, family.native_side,
                            family.multiple)
    return _edited(origin, parent, image, JobKind.ZOOM, sheet, f"zoom {factor:g}")


def panned(origin: Origin, parent: JobRecord, image: ImageRecord, direction: str,
           family: Family) -> JobRecord:
    """`⬅️` `➡️` `⬆️` `⬇️`: the canvas grows by half the picture on that side."""
    sheet = canvas.pan(image.width, image.height, direction, family.multiple)
    _check_size(PAN_ARROWS[direction], sheet.width, sheet.height)
    return _edited(origin, parent, image, JobKind.PAN, sheet, f"pan {direction}")


def squared(origin: Origin, parent: JobRecord, image: ImageRecord) -> JobRecord:
    """`Make Square`: the picture in the middle of a square of its longer side."""
    if image.width == image.height:
        raise JobRefused("This picture is square already")
    sheet = canvas.make_square(image.width, image.height)
    _check_size("Make Square", sheet.width, sheet.height)
    return _edited(origin, parent, image, JobKind.SQUARE, sheet, "square")


def region(origin: Origin, parent: JobRecord, image: ImageRecord,
           cells: frozenset[int]) -> JobRecord:
    """`Vary (Region)`: the chosen cells redrawn, the rest of the picture kept. Its mask (the
    cells in white) is stored as the job is accepted (`JobRunner.accept`)."""
    sheet = canvas.whole(image.width, image.height)
    numbers = ",".join(str(cell) for cell in sorted(cells))
    return _edited(origin, parent, image, JobKind.REGION, sheet, f"region {numbers}")


def painted_region(origin: Origin, parent: JobRecord, image: ImageRecord) -> JobRecord:
    """The gallery's `Edit` (the web's Vary (Region), SPEC §8): an area of any shape painted
    over the picture is redrawn, the rest kept. Its mask (white where painted) is stored as the
    job is accepted (`JobRunner.accept_in_channel`)."""
    sheet = canvas.whole(image.width, image.height)
    return _edited(origin, parent, image, JobKind.REGION, sheet, "region painted")


def _check_size(what: str, width: int, height: int) -> None:
    """Refuse an edit whose result would be too large or too long (SPEC §3.1), naming it."""
    try:
        check_pixels(width, height)
    except ImageSizeError as error:
        raise JobRefused(f"{what} is not possible: {error}") from None
    if max(width / height, height / width) > limits.ASPECT_MAX_RATIO:
        raise JobRefused(f"{what} is not possible: the result would be {width}×{height}, "
                         "beyond 4:1")
