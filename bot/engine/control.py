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
- `pose`: the pose annotator's skeleton (`SD_ANNOTATORS`, a VitPose model), drawn as OpenPose
  draws it, else the picture taken as an OpenPose skeleton;
- `tile`, `as-is`: the picture itself."""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
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

# The pose skeleton, as lllyasviel's OpenPose annotator draws it for the openpose ControlNets: the
# 18 points of OpenPose's body layout (nose, neck, right shoulder, elbow, wrist, left shoulder,
# elbow, wrist, right hip, knee, ankle, left hip, knee, ankle, right eye, left eye, right ear,
# left ear), each with its colour; a limb between two points takes the colour of its place in
# `OPENPOSE_LIMBS`, at 60 % brightness, under the points in full colour, on black. (OpenPose's
# last two limbs, ear to shoulder, are left out of its drawing, and so here.)
OPENPOSE_COLOURS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85))
OPENPOSE_LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12),
    (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17))
LIMB_SHADE = 0.6
# Each OpenPose point's COCO keypoint (VitPose's 17, in COCO's order: nose, left eye, right eye,
# left ear, right ear, left shoulder, right shoulder, …); the neck, which COCO lacks, is the
# midpoint of the shoulders.
COCO_OF_OPENPOSE = (0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)
COCO_SHOULDERS = (5, 6)
COCO_KEYPOINTS = 17
POSE_THRESHOLD = 0.3  # keypoints scored below this are left out, as the DWPose annotator does
# OpenPose draws limbs 4 px wide and points 4 px in radius on a picture whose short side is 512
OPENPOSE_SIDE, OPENPOSE_STROKE = 512, 4

Point = tuple[float, float]


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


def openpose_points(keypoints: Sequence[Point], scores: Sequence[float],
                    threshold: float = POSE_THRESHOLD) -> list[Point | None]:
    """The 18 OpenPose points from the 17 COCO keypoints (x, y in pixels) and their scores;
    None where a keypoint scored below `threshold` (the neck: where either shoulder did)."""
    def seen(index: int) -> Point | None:
        return keypoints[index] if scores[index] >= threshold else None

    points: list[Point | None] = []
    for coco in COCO_OF_OPENPOSE:
        if coco is not None:
            points.append(seen(coco))
            continue
        left, right = (seen(index) for index in COCO_SHOULDERS)
        points.append(None if left is None or right is None
                      else ((left[0] + right[0]) / 2, (left[1] + right[1]) / 2))
    return points


def pose_skeleton(points: Sequence[Point | None], width: int, height: int) -> Image.Image:
    """The OpenPose drawing of one body's 18 points (None: not seen), at width×height: limbs as
    filled ellipses between their points, then the points as dots, on black."""
    import cv2
    import numpy as np

    stroke = max(1, round(OPENPOSE_STROKE * min(width, height) / OPENPOSE_SIDE))
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    # 17 limbs take the first 17 of the 18 colours
    for colour, (start, end) in zip(OPENPOSE_COLOURS, OPENPOSE_LIMBS, strict=False):
        first, second = points[start], points[end]
        if first is None or second is None:
            continue
        length = math.dist(first, second)
        angle = math.degrees(math.atan2(second[1] - first[1], second[0] - first[0]))
        centre = (int((first[0] + second[0]) / 2), int((first[1] + second[1]) / 2))
        polygon = cv2.ellipse2Poly(centre, (int(length / 2), stroke), int(angle), 0, 360, 1)
        shade = tuple(int(level * LIMB_SHADE) for level in colour)
        cv2.fillConvexPoly(canvas, np.asarray(polygon, dtype=np.int32), shade)
    for colour, point in zip(OPENPOSE_COLOURS, points, strict=True):
        if point is not None:
            cv2.circle(canvas, (int(point[0]), int(point[1])), stroke, colour, thickness=-1)
    return Image.fromarray(canvas)


@dataclass(frozen=True)
class Preparation:
    make: Callable[[Image.Image], Image.Image]  # without an annotator
    annotated: bool = False  # an annotator (SD_ANNOTATORS) makes the map where there is one


PREPARATIONS: dict[str, Preparation] = {
    "canny": Preparation(canny),
    "depth": Preparation(as_is, annotated=True),
    "pose": Preparation(as_is, annotated=True),
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
        self._annotators: dict[tuple[str, str], Annotator] = {}  # by control and source

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
        if (kind, source) not in self._annotators:
            load = self._load_pose if kind == "pose" else self._load_depth
            self._annotators[kind, source] = load(source)
        return self._annotators[kind, source]

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

    def _load_pose(self, source: str) -> Annotator:
        """A transformers VitPose model as a picture → OpenPose skeleton. VitPose finds the pose
        of a person in a box a detector gives; with no detector here, the whole picture is the
        one person's box, so the skeleton drawn is one body's."""
        import torch

        started = time.perf_counter()
        try:
            from transformers import AutoImageProcessor, VitPoseForPoseEstimation

            processor = AutoImageProcessor.from_pretrained(source)
            model: Any = VitPoseForPoseEstimation.from_pretrained(source, dtype=self.dtype)
            keypoints = model.config.num_labels or 0
            if keypoints < COCO_KEYPOINTS:  # COCO-WholeBody's 133 start with COCO's 17
                raise ValueError(f"{keypoints} keypoints, not COCO's 17")
        except (ImportError, OSError, ValueError) as error:
            log.error("cannot load the pose annotator %s: %s", source, error)
            raise EngineError("The pose annotator (SD_ANNOTATORS) could not be loaded") \
                from error
        model.to(self.device).eval()
        # ViTPose+ models mix experts per data set: 0 is COCO's
        experts = getattr(model.config.backbone_config, "num_experts", 1)
        log.info("loaded the pose annotator %s in %.1f s", source, time.perf_counter() - started)

        def pose(picture: Image.Image) -> Image.Image:
            boxes = [[[0.0, 0.0, float(picture.width), float(picture.height)]]]
            inputs = processor(picture.convert("RGB"), boxes=boxes, return_tensors="pt")
            pixels = inputs["pixel_values"].to(self.device, self.dtype)
            extra = {"dataset_index": torch.zeros(1, dtype=torch.long, device=self.device)} \
                if experts > 1 else {}
            with torch.inference_mode():
                outputs = model(pixel_values=pixels, **extra)
            outputs.heatmaps = outputs.heatmaps.float()
            found = processor.post_process_pose_estimation(outputs, boxes=boxes)[0][0]
            keypoints = [(float(x), float(y)) for x, y in found["keypoints"][:COCO_KEYPOINTS]]
            scores = [float(score) for score in found["scores"][:COCO_KEYPOINTS]]
            return pose_skeleton(openpose_points(keypoints, scores), picture.width,
                                 picture.height)

        return pose
