"""Plain, serialisable dataclasses that cross into and out of the executor."""

from __future__ import annotations

from dataclasses import dataclass, field


class EngineError(Exception):
    """A job could not be run; the message is fit to show to its author."""


class JobCancelled(Exception):
    """The job was cancelled before it finished."""


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
    init_image: bytes | None = field(default=None, repr=False)  # encoded picture (img2img)
    strength: float | None = None
    # LoRAs from LORA_DIR and their weights, sorted by name (the prompt's `<lora:…>` tags).
    loras: tuple[tuple[str, float], ...] = ()

    @property
    def count(self) -> int:
        return len(self.seeds)

    @property
    def pipeline_steps(self) -> int:
        """`num_inference_steps` for the pipeline. img2img runs only `steps × strength` of them,
        so at least enough are asked for that one step runs (turbo models use few steps)."""
        if self.init_image is None or not self.strength:
            return self.steps
        steps = self.steps
        while int(steps * self.strength) < 1:
            steps += 1
        return steps

    @property
    def denoising_steps(self) -> int:
        """How many steps actually run: what progress counts to."""
        if self.init_image is None or not self.strength:
            return self.steps
        return min(int(self.pipeline_steps * self.strength), self.pipeline_steps)

    @property
    def kind(self) -> str:
        return "img2img" if self.init_image is not None else "txt2img"

    def batch_key(self) -> tuple[object, ...]:
        """Requests with equal keys can share one pipeline call."""
        return (self.model, self.kind, self.width, self.height, self.steps, self.guidance,
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
