"""Plain, serialisable dataclasses that cross into and out of the executor."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class EngineError(Exception):
    """A job could not be run; the message is fit to show to its author."""


class JobCancelled(Exception):
    """The job was cancelled before it finished."""


# ControlNet: what a control picture gives the model (`bot.engine.control` makes each one's map).
CONTROLS = ("canny", "depth", "pose", "lineart", "scribble", "tile", "as-is")


@dataclass(frozen=True)
class Control:
    """A ControlNet condition: the picture (encoded) the map is made from, which map, and how
    strongly it holds the drawing to it (`--cw`, 0–2)."""

    kind: str  # one of CONTROLS
    picture: bytes = field(repr=False)
    weight: float = 1.0


@dataclass(frozen=True)
class Reference:
    """An IP-Adapter condition: pictures (encoded) that steer the drawing (`reference`, or
    `/blend`'s pictures, mixed), how strongly (`--iw`, 0–3), and, for a style reference
    (`--sref`), its weight `--sw` (0–1000; None: the pictures steer content and style)."""

    pictures: tuple[bytes, ...] = field(repr=False)
    weight: float = 1.0
    style: float | None = None


class Mode(StrEnum):
    """How a request makes its pictures; `bot.engine.modes` says what each one needs."""

    TXT2IMG = "txt2img"  # from noise
    IMG2IMG = "img2img"  # from `init_image`, moved `strength` of the way
    INPAINT = "inpaint"  # `init_image` on a canvas, redrawn where `mask` (or the new area) is


@dataclass(frozen=True)
class GenerationRequest:
    """One job: `len(seeds)` images of one prompt. Image i uses a generator seeded `seeds[i]`."""

    job_id: str
    user_key: str  # whose turn it is, for fair scheduling
    model: str  # a catalogue name
    prompt: str  # may hold `::` weighted parts, `(word:1.3)` emphasis and `<lora:…>` tags
    negative: str
    width: int
    height: int
    steps: int
    guidance: float
    sampler: str
    seeds: tuple[int, ...]
    mode: Mode = Mode.TXT2IMG
    init_image: bytes | None = field(default=None, repr=False)  # encoded picture to start from
    strength: float | None = None
    # LoRAs from LORA_DIR and their weights, sorted by name (the prompt's `<lora:…>` tags).
    loras: tuple[tuple[str, float], ...] = ()
    # Inpainting: where `init_image` sits on the width×height canvas (`x,y,w,h`; None: all of it),
    # and the mask of what to redraw (an encoded picture, white = redraw; None: all but the box).
    box: str | None = None
    mask: bytes | None = field(default=None, repr=False)
    # Conditions that combine with any mode: a ControlNet's map, and reference pictures through
    # an IP-Adapter. A weight of 0 draws as if there were none (`--cw 0`, `--iw 0`).
    control: Control | None = None
    reference: Reference | None = None

    def __post_init__(self) -> None:
        if (self.mode is Mode.TXT2IMG) != (self.init_image is None):
            raise ValueError(f"a {self.mode} request {'has' if self.init_image else 'needs'} "
                             "a picture to start from")

    @property
    def count(self) -> int:
        return len(self.seeds)

    @property
    def pipeline_steps(self) -> int:
        """`num_inference_steps` for the pipeline. From a picture, only `steps × strength` of
        them run, so at least enough are asked for that one step runs (turbo models use few)."""
        if self.mode is Mode.TXT2IMG or not self.strength:
            return self.steps
        steps = self.steps
        while int(steps * self.strength) < 1:
            steps += 1
        return steps

    @property
    def denoising_steps(self) -> int:
        """How many steps actually run: what progress counts to."""
        if self.mode is Mode.TXT2IMG or not self.strength:
            return self.steps
        return min(int(self.pipeline_steps * self.strength), self.pipeline_steps)

    def batch_key(self) -> tuple[object, ...]:
        """Requests with equal keys can share one pipeline call (pictures, masks and boxes may
        differ: each image of a call has its own)."""
        return (self.model, self.mode, self.width, self.height, self.steps, self.guidance,
                self.sampler, self.strength, self.loras, *self.conditions_key())

    def conditions_key(self) -> tuple[object, ...]:
        """What of the conditions a pipeline call shares: the ControlNet and its weight, the
        number of reference pictures (their tokens line up) and how they steer."""
        control = None
        if self.control is not None and self.control_active:
            control = (self.control.kind, self.control.weight)
        reference = None
        if self.reference_active:
            assert self.reference is not None
            reference = (len(self.reference.pictures), self.reference.weight,
                         self.reference.style)
        return control, reference

    @property
    def control_active(self) -> bool:
        return self.control is not None and self.control.weight > 0

    @property
    def reference_active(self) -> bool:
        return self.reference is not None and self.reference.weight > 0 \
            and bool(self.reference.pictures) and self.reference.style != 0


@dataclass(frozen=True)
class CaptionRequest:
    """`/describe`: `count` prompt suggestions for a picture. Served by the same fair queue and
    worker as pictures (the worker owns the GPU); requests share a call with each other only."""

    job_id: str
    user_key: str
    picture: bytes = field(repr=False)
    seed: int = 0  # suggestions are sampled: another seed, other suggestions
    suggestions: int = 4

    # The executor's view of a request, as of a `GenerationRequest`: one picture, no steps
    count = 1
    denoising_steps = 0

    def batch_key(self) -> tuple[object, ...]:
        return ("caption",)


@dataclass(frozen=True)
class CaptionResult:
    job_id: str
    suggestions: tuple[str, ...]
    seconds: float



@dataclass(frozen=True)
class GeneratedImage:
    seed: int
    png: bytes = field(repr=False)  # carries the AUTOMATIC1111 `parameters` chunk
    width: int
    height: int
    nsfw: bool = False


@dataclass(frozen=True)
class GenerationResult:
    job_id: str
    model: str
    images: tuple[GeneratedImage, ...]
    seconds: float  # this job's share of pipeline time
    batch_images: int  # images in the pipeline call(s) that made it
    prompt_chunks: int = 1  # 75-token chunks the prompt was encoded in (more than 1: a long one)
    control_map: bytes | None = field(default=None, repr=False)  # the ControlNet's map, a PNG


@dataclass(frozen=True)
class Progress:
    """Where a job stands: waiting at `position` (1 = next), or running at `step` of `total`."""

    job_id: str
    state: str  # "queued" or "running"
    position: int = 0
    step: int = 0
    total: int = 0
    preview: bytes | None = field(default=None, repr=False)  # small PNG decoded from latents
    # Queued while no worker could start yet: the engine is trying again (with backoff).
    engine_retrying: bool = False
    loading: str | None = None  # the model being loaded meanwhile: "loading model (42 %)"


# What the executor queues and what comes back.
Work = GenerationRequest | CaptionRequest
WorkResult = GenerationResult | CaptionResult
