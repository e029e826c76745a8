"""ControlNet: the control maps made from a control picture, and the ControlNet models that read
them (`SD_CONTROLNETS`), loaded on first use and kept on the device while they are used.

A map is made at the job's size, from the picture fitted to it (scaled to cover, centred, the
overflow cut), as AUTOMATIC1111 does with "Crop and Resize": the drawing then lines up with the
map whatever the picture's shape. Each control has its preparation in `PREPARATIONS`:

- `canny`: OpenCV's Canny edges at thresholds 100 and 200, exactly what the canny ControlNets
  were trained on (white edges on black);
- `lineart`, `scribble`: a line drawing, as white lines on black (a drawing with dark lines on a
  light page is inverted); a scribble's lines are made solid;
- `depth`: the depth annotator's map (`SD_ANNOTATORS`), else the picture taken as a depth map;
- `pose`, `tile`, `as-is`: the picture itself (a pose is expected as an OpenPose skeleton)."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps, ImageStat

from bot.engine.adapters import AdapterConfig
from bot.engine.models import SINGLE_FILE_SUFFIXES
from bot.engine.pictures import decode_picture
from bot.engine.types import Control, EngineError

log = logging.getLogger(__name__)

CONTROLNETS_KEPT = 2  # ControlNet models kept loaded (on the device) besides the one in use
CANNY_LOW, CANNY_HIGH = 100, 200  # the thresholds of lllyasviel's canny annotator
LIGHT_PAGE = 127  # a drawing whose mean grey is above this has dark lines on a light page

Annotator = Callable[[Image.Image], Image.Image]


def fit(picture: Image.Image, width: int, height: int) -> Image.Image:
    """`picture` scaled to cover width×height and cut to it, centred."""
    if picture.size == (width, height):
        return picture
    return ImageOps.fit(picture, (width, height), Image.Resampling.LANCZOS)


def canny(picture: Image.Image) -> Image.Image:
    import cv2
    import numpy as np

    grey = np.asarray(picture.convert("L"))
    edges = cv2.Canny(grey, CANNY_LOW, CANNY_HIGH)
    return Image.fromarray(edges).convert("RGB")


def line_drawing(picture: Image.Image) -> Image.Image:
    """White lines on black, as the lineart and scribble ControlNets read them."""
    grey = picture.convert("L")
    if ImageStat.Stat(grey).mean[0] > LIGHT_PAGE:
        grey = ImageOps.invert(grey)
    return grey.convert("RGB")


def scribble(picture: Image.Image) -> Image.Image:
    lines = line_drawing(picture).convert("L")
    return lines.point(lambda level: 255 if level >= 128 else 0).convert("RGB")


def as_is(picture: Image.Image) -> Image.Image:
    return picture.convert("RGB")


@dataclass(frozen=True)
class Preparation:
    make: Callable[[Image.Image], Image.Image]  # without an annotator
    annotated: bool = False  # an annotator (SD_ANNOTATORS) makes the map where there is one


PREPARATIONS: dict[str, Preparation] = {
    "canny": Preparation(canny),
    "depth": Preparation(as_is, annotated=True),
    "pose": Preparation(as_is),
    "lineart": Preparation(line_drawing),
    "scribble": Preparation(scribble),
    "tile": Preparation(as_is),
    "as-is": Preparation(as_is),
}


def control_map(control: Control, width: int, height: int,
                annotator: Annotator | None = None) -> Image.Image:
    """The map a ControlNet reads for `control`, at width×height."""
    picture = fit(decode_picture(control.picture, "control image"), width, height)
    preparation = PREPARATIONS[control.kind]
    if preparation.annotated and annotator is not None:
        return fit(annotator(picture).convert("RGB"), width, height)
    return preparation.make(picture)


class ControlModels:
    """The ControlNets and annotators of `SD_CONTROLNETS` and `SD_ANNOTATORS`, loaded when a job
    first needs them. Used on the worker's thread only."""

    def __init__(self, config: AdapterConfig, device: str, dtype: Any) -> None:
        self.config = config
        self.device = device
        self.dtype = dtype
        self._controlnets: OrderedDict[str, Any] = OrderedDict()  # by source
        self._annotators: dict[str, Annotator] = {}

    def controlnet(self, arch: str, kind: str) -> Any:
        """The ControlNet serving `kind` for models of `arch`, on the device."""
        source = self.config.controlnet(arch, kind)
        if source is None:
            raise EngineError(f"No ControlNet for `{kind}` is set up for this model "
                              "(SD_CONTROLNETS)")
        model = self._controlnets.get(source)
        if model is None:
            model = self._load(source, kind)
            while len(self._controlnets) > CONTROLNETS_KEPT:
                self._controlnets.popitem(last=False)
            self._controlnets[source] = model
        self._controlnets.move_to_end(source)
        return model

    def _load(self, source: str, kind: str) -> Any:
        from diffusers import ControlNetModel

        started = time.perf_counter()
        path = Path(source).expanduser()
        try:
            if path.suffix.lower() in SINGLE_FILE_SUFFIXES:
                model = ControlNetModel.from_single_file(str(path), dtype=self.dtype)
            else:
                inner = "controlnet" if (path / "controlnet" / "config.json").is_file() else None
                model = ControlNetModel.from_pretrained(
                    str(path) if path.is_dir() else source, subfolder=inner, dtype=self.dtype)
        except (OSError, ValueError) as error:
            log.error("cannot load the %s ControlNet %s: %s", kind, source, error)
            raise EngineError(f"The `{kind}` ControlNet (SD_CONTROLNETS) could not be "
                              "loaded") from error
        model.to(self.device)
        log.info("loaded the %s ControlNet %s in %.1f s", kind, source,
                 time.perf_counter() - started)
        return model

    def annotator(self, kind: str) -> Annotator | None:
        """What makes `kind`'s map from a picture, where `SD_ANNOTATORS` names a model."""
        if not PREPARATIONS[kind].annotated:
            return None
        source = self.config.annotator(kind)
        if source is None:
            return None
        if source not in self._annotators:
            self._annotators[source] = self._load_depth(source)
        return self._annotators[source]

    def _load_depth(self, source: str) -> Annotator:
        """A transformers depth estimator (DPT, Depth Anything) as a picture → depth map."""
        from transformers import pipeline

        started = time.perf_counter()
        try:
            estimator = pipeline("depth-estimation", model=source, device=self.device,
                                 dtype=self.dtype)
        except (OSError, ValueError) as error:
            log.error("cannot load the depth annotator %s: %s", source, error)
            raise EngineError("The depth annotator (SD_ANNOTATORS) could not be loaded") \
                from error
        log.info("loaded the depth annotator %s in %.1f s", source,
                 time.perf_counter() - started)

        def depth(picture: Image.Image) -> Image.Image:
            return estimator(picture)["depth"]

        return depth
