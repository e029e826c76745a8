"""Jobs made from others (bot/jobs/making.py): edits take their canvas from the picture and refuse
what they cannot make, naming the limit; rerolls and remixes keep an edit's canvas."""

from __future__ import annotations

import pytest

from bot.engine.models import FAMILIES, ModelSpec
from bot.jobs import JobRefused, Origin
from bot.jobs.making import (
    painted_region,
    panned,
    region,
    remixed,
    rerolled,
    squared,
    zoomed,
)
from bot.options import JobParameters
from bot.prompt import Aspect
from storage import ImageRecord, JobKind, JobRecord
from tests.storage.factories import make_job

ORIGIN = Origin(guild_id=1, channel_id=2, user_id=30, nsfw_allowed=False, application_id=4,
                interaction_token="token", attachment_limit=None)
SD1 = FAMILIES["sd1"]
SD1_SPEC = ModelSpec("sd15", "sd15.safetensors", SD1)


def picture(width: int, height: int) -> tuple[JobRecord, ImageRecord]:
    job = make_job(width=width, height=height, status="done", model="sd15")
    return job, ImageRecord(job.id, 1, 5, "ab/ab.png", "ab" * 32, width, height, 100)


def test_an_edit_is_four_new_pictures_of_one_picture_for_whoever_asked() -> None:
    parent, image = picture(512, 512)
    job = zoomed(ORIGIN, parent, image, 2, SD1)
    assert (job.kind, job.count, job.mode, job.strength) == (JobKind.ZOOM, 4, "inpaint", 1.0)
    assert (job.parent_job, job.parent_index, job.init_image) == (parent.id, 2, image.sha256)
    assert (job.width, job.height, job.box, job.edit) == (512, 512, "128,128,256,256", "zoom 2")
    assert (job.user_id, job.interaction_token) == (30, "token")
    assert job.id != parent.id and job.message_id is None


def test_zoom_of_an_upscale_comes_back_to_the_models_size() -> None:
    parent, image = picture(1024, 1024)
    job = zoomed(ORIGIN, parent, image, 1.5, SD1)
    assert (job.width, job.height, job.box) == (512, 512, "85,85,341,341")


def test_zoom_factors_outside_one_to_two_are_refused() -> None:
    parent, image = picture(512, 512)
    with pytest.raises(JobRefused, match=r"`--zoom` must be from 1 to 2, got 2.5"):
        zoomed(ORIGIN, parent, image, 2.5, SD1)


def test_pan_and_square_refuse_what_is_too_large_or_too_long() -> None:
    parent, image = picture(2048, 2048)
    with pytest.raises(JobRefused, match=r"^➡️ is not possible: 3072×2048 is 6.3 megapixels; "
                                         r"at most 4.2 are allowed$"):
        panned(ORIGIN, parent, image, "right", SD1)
    long_parent, long_image = picture(1024, 256)
    with pytest.raises(JobRefused, match=r"beyond 4:1"):
        panned(ORIGIN, long_parent, long_image, "left", SD1)
    wide_parent, wide_image = picture(2560, 1440)
    with pytest.raises(JobRefused, match=r"^Make Square is not possible: 2560×2560"):
        squared(ORIGIN, wide_parent, wide_image)
    square_parent, square_image = picture(512, 512)
    with pytest.raises(JobRefused, match="square already"):
        squared(ORIGIN, square_parent, square_image)


def test_a_region_names_its_cells_and_is_the_whole_picture() -> None:
    parent, image = picture(768, 512)
    job = region(ORIGIN, parent, image, frozenset({9, 1, 5}))
    assert (job.kind, job.edit, job.box, job.width, job.height) == (
        JobKind.REGION, "region 1,5,9", "0,0,768,512", 768, 512)
    assert job.mask_image is None  # stored as the job is accepted


def test_a_painted_region_is_the_whole_picture_redrawn_where_painted() -> None:
    parent, image = picture(768, 512)
    web = Origin(guild_id=1, channel_id=2, user_id=31, nsfw_allowed=False, application_id=4,
                 interaction_token=None, attachment_limit=None)
    job = painted_region(web, parent, image)
    assert (job.kind, job.edit, job.box, job.width, job.height, job.mode, job.count) == (
        JobKind.REGION, "region painted", "0,0,768,512", 768, 512, "inpaint", 4)
    assert (job.user_id, job.interaction_token, job.parent_job, job.parent_index) == (
        31, None, parent.id, 2)
    again = rerolled(ORIGIN, job)  # 🔄 repeats the same painted edit
    assert (again.edit, again.box, again.mask_image) == (job.edit, job.box, job.mask_image)


def test_reroll_and_remix_keep_an_edits_canvas() -> None:
    parent, image = picture(512, 512)
    edit = panned(ORIGIN, parent, image, "down", SD1)
    again = rerolled(ORIGIN, edit)
    assert (again.kind, again.parent_job, again.parent_index) == (JobKind.REROLL, edit.id, None)
    for field in ("box", "edit", "mode", "init_image", "width", "height", "strength", "count"):
        assert getattr(again, field) == getattr(edit, field), field
    assert again.seed != edit.seed or again.id != edit.id

    params = JobParameters(prompt="a river", negative="fog", model=SD1_SPEC, sampler="euler",
                           aspect=Aspect(1, 1), width=512, height=512, steps=20, guidance=5.0,
                           seed=7, count=1, strength=None)
    remix = remixed(edit, params)
    assert (remix.prompt, remix.negative, remix.steps, remix.seed) == ("a river", "fog", 20, 7)
    assert (remix.width, remix.height, remix.count, remix.strength, remix.box) == (
        512, 768, 4, 1.0, edit.box)
