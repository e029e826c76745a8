"""The pipeline modes, as a table: what diffusers pipeline each uses and how a request becomes its
inputs. Adding a mode is one `Mode` value, one row here and its preparation function.

Every pipeline of a model is made from the loaded one with `from_pipe`, so all modes share the same
weights. A preparation turns one request into the pictures its images get (the same for each of its
images) and, where the mode needs it, a finishing step for each picture the pipeline returns.

ControlNet and IP-Adapter are not modes: they combine with every mode (`bot.engine.control`,
`bot.engine.references`); a mode only says which argument takes a ControlNet's map."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from bot.engine import canvas
from bot.engine.pictures import decode_picture
from bot.engine.types import EngineError, GenerationRequest, Mode


def _unchanged(picture: Image.Image) -> Image.Image:
    return picture


@dataclass(frozen=True)
class Inputs:
    """What one request gives each of its images in a pipeline call."""

    pictures: dict[str, Image.Image] = field(default_factory=dict)  # `image`, `mask_image`
    finish: Callable[[Image.Image], Image.Image] = _unchanged


@dataclass(frozen=True)
class ModeSpec:
    pipeline: str  # a diffusers `AutoPipelineFor…` class, made with `from_pipe`
    prepare: Callable[[GenerationRequest], Inputs]
    call: Callable[[GenerationRequest], dict[str, Any]]  # arguments shared by the whole call
    # The argument a ControlNet's map is given as, in this mode's ControlNet pipeline (from
    # noise the map is the `image`; from a picture, that picture is)
    control_argument: str = "control_image"


# ---- txt2img ------------------------------------------------------------------------------------

def _prepare_txt2img(request: GenerationRequest) -> Inputs:
    return Inputs()


def _sized(request: GenerationRequest) -> dict[str, Any]:
    return {"width": request.width, "height": request.height}


# ---- img2img ------------------------------------------------------------------------------------

def _prepare_img2img(request: GenerationRequest) -> Inputs:
    picture = decode_picture(request.init_image, "starting picture")
    if picture.size != (request.width, request.height):
        picture = picture.resize((request.width, request.height), Image.Resampling.LANCZOS)
    return Inputs({"image": picture})


def _with_strength(request: GenerationRequest) -> dict[str, Any]:
    return {"strength": request.strength}


# ---- inpaint ------------------------------------------------------------------------------------

def _prepare_inpaint(request: GenerationRequest) -> Inputs:
    """The picture on its canvas, the area to redraw, and the keep rule for what comes back: the
    pipeline redraws a little beyond the mask so the new pixels fade into the kept ones, and
    every pixel beyond that band is the picture's own."""
    width, height = request.width, request.height
    box = canvas.Box.parse(request.box) if request.box else canvas.Box(0, 0, width, height)
    if box.x < 0 or box.y < 0 or box.right > width or box.bottom > height:
        raise EngineError(f"The picture's place {box} is outside the {width}×{height} canvas")
    sheet = canvas.Canvas(width, height, box)
    picture = canvas.compose(decode_picture(request.init_image, "picture to edit"), sheet)
    if request.mask is not None:
        mask = canvas.fit_mask(decode_picture(request.mask, "mask"), width, height)
    else:
        mask = canvas.outside_mask(sheet)
    if mask.getextrema()[1] == 0:
        raise EngineError("The mask is empty: paint the area to redraw in white")
    redrawn = canvas.blend_mask(mask).point(lambda level: 255 if level else 0)
    return Inputs({"image": picture, "mask_image": redrawn},
                  finish=lambda generated: canvas.keep(generated, picture, mask))


def _inpaint_call(request: GenerationRequest) -> dict[str, Any]:
    return {"width": request.width, "height": request.height, "strength": request.strength or 1.0}


MODES: dict[Mode, ModeSpec] = {
    Mode.TXT2IMG: ModeSpec("AutoPipelineForText2Image", _prepare_txt2img, _sized, "image"),
    Mode.IMG2IMG: ModeSpec("AutoPipelineForImage2Image", _prepare_img2img, _with_strength),
    Mode.INPAINT: ModeSpec("AutoPipelineForInpainting", _prepare_inpaint, _inpaint_call),
}
