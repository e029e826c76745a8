"""Plain, serialisable dataclasses that cross into and out of the executor."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class EngineError(Exception):
    """A job could not be run; the message is fit to show to its author."""


class JobCancelled(Exception):
    """The job was cancelled before it finished."""


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
                self.sampler, self.strength, self.loras)


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
