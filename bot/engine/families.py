"""Model families, as one table: what each kind of model needs, accepts and refuses.

A family is what the bot knows of a model before it is loaded: its native area and the multiple
its sides are rounded to, the defaults a job gets (steps, guidance, sampler), the scheduler
settings it was distilled for, how its prompts are read, whether negative prompts and `::`
weights apply, and the dtype it needs on a GPU. `bot.engine.models` works out a model's family
from its files or its name; adding a family is one row here (and its detection there).

Families of one design share an `Architecture`: how the engine encodes their prompts, which
pipelines serve them and what their latents look like (`TRAITS`).

- SD 1.x/2.x/SDXL (UNet, CLIP): prompts in 75-token chunks with AUTOMATIC1111 emphasis and
  Midjourney `::` blends (`bot.engine.conditioning`), every SD sampler.
- FLUX.1 and SD 3.5 (transformers trained with flow matching, a T5 text encoder): the prompt is
  one sentence of up to 256 or 512 T5 tokens, encoded by the pipeline itself
  (`bot.engine.sentences`); they take flow-matching Euler (`euler`) only. FLUX.1 is
  guidance-distilled, so it has no negative prompt, and runs in bfloat16 (its activations overflow
  float16)."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any


class Architecture(StrEnum):
    SD = "sd"  # UNet + CLIP: SD 1.x, 2.x, SDXL and their few-step versions
    FLUX = "flux"  # FLUX.1: transformer, CLIP (pooled) + T5, packed latents
    SD3 = "sd3"  # Stable Diffusion 3 / 3.5: transformer, two CLIPs + T5 (optional)


@dataclass(frozen=True)
class Traits:
    """What the models of one architecture share, as the engine handles them."""

    single_file: str  # the diffusers pipeline class that loads a single-file checkpoint
    denoiser: str  # the pipeline's denoising model: `unet` or `transformer`
    packed_latents: bool = False  # FLUX packs 2×2 latent patches into its sequence
    # Its image-to-image pipeline makes pictures of `height`×`width` (else of the picture's size)
    sized_img2img: bool = False


TRAITS = {
    Architecture.SD: Traits("StableDiffusionPipeline", "unet"),
    Architecture.FLUX: Traits("FluxPipeline", "transformer", packed_latents=True,
                              sized_img2img=True),
    Architecture.SD3: Traits("StableDiffusion3Pipeline", "transformer", sized_img2img=True),
}


@dataclass(frozen=True)
class Family:
    """What a kind of model needs by default, and what it accepts."""

    name: str
    label: str
    native_side: int
    steps: int
    guidance: float
    sampler: str
    multiple: int = 8
    arch: Architecture = Architecture.SD
    # Set on every scheduler the model runs with, whichever sampler: few-step models were
    # distilled on the last timesteps ("trailing"), and run badly on others.
    scheduler_options: tuple[tuple[str, Any], ...] = ()
    # Families whose prompt is a sentence for a T5 encoder: the length (in T5 tokens) it is
    # encoded at, and the most tokens a prompt may have (a longer one is encoded at that).
    sequence: int = 0
    max_tokens: int = 0
    t5: bool = False  # T5 reads the prompt (SD 3.5 can run without it: CLIP reads 77 tokens)
    negative: bool = True  # a negative prompt applies
    weights: bool = True  # Midjourney `::` weights apply
    dtype: str | None = None  # what SD_DTYPE=auto gives on a GPU; None: float16

    @property
    def traits(self) -> Traits:
        return TRAITS[self.arch]

    @property
    def sentences(self) -> bool:
        """Whether the pipeline encodes the prompt as one sentence (no chunks, no emphasis)."""
        return self.arch is not Architecture.SD

    @property
    def prompt_tokens(self) -> str:
        """How long a prompt may be, as users read it: `512 T5 tokens`, `77 CLIP tokens`."""
        if not self.sentences:
            return "75-token chunks"
        return f"{self.max_tokens} {'T5' if self.t5 else 'CLIP'} tokens"

    def limits_text(self) -> str:
        """What it does not take, for `/info` and errors: `no negative prompt · no :: weights`."""
        notes = []
        if self.sentences:
            notes.append(f"prompts up to {self.prompt_tokens}")
        if not self.negative:
            notes.append("no negative prompt")
        if not self.weights:
            notes.append("no `::` weights")
        return " · ".join(notes)

    def negative_refusal(self) -> str:
        return (f"{self.label} takes no negative prompt (it is guidance-distilled): leave out "
                "`negative` and `--no`, and describe only what should be in the picture")

    def weights_refusal(self) -> str:
        return (f"{self.label} reads the prompt as one sentence: `::` weights do not apply to "
                "it; write the parts as one prompt")

    def length_refusal(self, what: str, tokens: int, *, at_least: bool = False) -> str:
        return (f"{what} is {'at least ' if at_least else ''}{tokens} tokens long; "
                f"{self.label} reads at most {self.prompt_tokens}")

    def without_t5(self) -> Family:
        """This SD 3.5 family run without its T5 encoder: CLIP reads 77 tokens of the prompt."""
        if self.arch is not Architecture.SD3:
            raise ValueError(f"{self.label} needs its T5 text encoder")
        return replace(self, label=f"{self.label} without T5", t5=False, max_tokens=77)


_TRAILING = (("timestep_spacing", "trailing"),)
_FLUX = dict(multiple=16, arch=Architecture.FLUX, t5=True, negative=False, weights=False,
             dtype="bfloat16")
_SD3 = dict(multiple=16, arch=Architecture.SD3, sequence=256, max_tokens=512, t5=True,
            weights=False, dtype="bfloat16")

FAMILIES = {
    f.name: f
    for f in (
        Family("tiny", "tiny (random, for tests)", 128, 30, 7.0, "euler"),
        Family("sd1", "SD 1.x", 512, 30, 7.0, "dpm++_2m_karras"),
        Family("sd2", "SD 2.x", 768, 30, 7.0, "dpm++_2m_karras"),
        Family("sdxl", "SDXL", 1024, 30, 6.0, "dpm++_2m_karras"),
        # Few-step models (their architecture's label goes before theirs: `SDXL-Turbo`)
        Family("turbo", "Turbo", 512, 4, 0.0, "euler_a", scheduler_options=_TRAILING),
        Family("lightning", "Lightning", 1024, 4, 0.0, "euler", scheduler_options=_TRAILING),
        Family("hyper", "Hyper-SD", 1024, 8, 0.0, "ddim", scheduler_options=_TRAILING),
        Family("lcm", "LCM", 512, 4, 1.0, "lcm"),
        # FLUX.1: [schnell] was distilled to 4 steps at 256 T5 tokens; [dev] reads guidance
        # as an input (no classifier-free guidance: one pass per step)
        Family("flux-schnell", "FLUX.1 [schnell]", 1024, 4, 0.0, "euler", sequence=256,
               max_tokens=256, **_FLUX),  # type: ignore[arg-type]
        Family("flux-dev", "FLUX.1 [dev]", 1024, 28, 3.5, "euler", sequence=512,
               max_tokens=512, **_FLUX),  # type: ignore[arg-type]
        # Stable Diffusion 3 / 3.5, with the defaults of their model cards
        Family("sd35-large", "SD 3.5 Large", 1024, 28, 3.5, "euler",
               **_SD3),  # type: ignore[arg-type]
        Family("sd35-large-turbo", "SD 3.5 Large Turbo", 1024, 4, 0.0, "euler",
               **_SD3),  # type: ignore[arg-type]
        Family("sd35-medium", "SD 3.5 Medium", 1024, 40, 4.5, "euler",
               **_SD3),  # type: ignore[arg-type]
        Family("sd3-medium", "SD 3 Medium", 1024, 28, 7.0, "euler",
               **_SD3),  # type: ignore[arg-type]
    )
}

# Few-step SDXL (and SD 1.5) models by the words in their names, most specific first.
FEW_STEP_WORDS = (("lightning", "lightning"), ("hyper", "hyper"), ("turbo", "turbo"),
                  ("lcm", "lcm"))
_STEPS_IN_NAME = re.compile(r"(\d+)[-_ ]?steps?")


def few_step(family: Family, hint: str) -> Family:
    """`family` (a few-step one) for the model named `hint`: SDXL-Lightning and Hyper-SD are
    published per step count (`sdxl_lightning_2step`, `Hyper-SDXL-8steps-CFG`), each meant to run
    at that many steps; Hyper-SD's CFG versions take a guidance scale (and a negative prompt),
    and SDXL-Lightning's 1-step model predicts the picture itself rather than the noise."""
    if family.name not in ("lightning", "hyper"):
        return family
    found = _STEPS_IN_NAME.search(hint)
    steps = int(found[1]) if found and 1 <= int(found[1]) <= 50 else family.steps
    guidance = 5.0 if family.name == "hyper" and "cfg" in hint else family.guidance
    options = family.scheduler_options
    if family.name == "lightning" and steps == 1:
        options = (*options, ("prediction_type", "sample"))
    return replace(family, steps=steps, guidance=guidance, scheduler_options=options)
