"""Sampler names users know, mapped onto diffusers schedulers built from a model's own config.

SD models take every SD sampler; FLUX.1 and SD 3.5, trained with flow matching, take the
flow-matching Euler sampler (`euler`, what their pipelines ship with) and refuse the others."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.engine.families import Architecture, Family


@dataclass(frozen=True)
class Sampler:
    name: str  # what users type: `--sampler dpm++_2m_karras`
    label: str  # what AUTOMATIC1111 calls it, for the `parameters` chunk
    scheduler: str  # diffusers class name
    options: tuple[tuple[str, Any], ...] = ()


SAMPLERS: dict[str, Sampler] = {
    s.name: s
    for s in (
        Sampler("euler", "Euler", "EulerDiscreteScheduler"),
        Sampler("euler_a", "Euler a", "EulerAncestralDiscreteScheduler"),
        Sampler("dpm++_2m", "DPM++ 2M", "DPMSolverMultistepScheduler"),
        Sampler("dpm++_2m_karras", "DPM++ 2M Karras", "DPMSolverMultistepScheduler",
                (("use_karras_sigmas", True),)),
        Sampler("dpm++_sde", "DPM++ 2M SDE", "DPMSolverMultistepScheduler",
                (("algorithm_type", "sde-dpmsolver++"),)),
        Sampler("ddim", "DDIM", "DDIMScheduler", (("clip_sample", False),)),
        Sampler("unipc", "UniPC", "UniPCMultistepScheduler"),
        Sampler("lcm", "LCM", "LCMScheduler"),
    )
}


FLOW_SAMPLERS: dict[str, Sampler] = {
    s.name: s
    for s in (Sampler("euler", "Euler", "FlowMatchEulerDiscreteScheduler"),)
}

_BY_ARCHITECTURE = {Architecture.SD: SAMPLERS, Architecture.FLUX: FLOW_SAMPLERS,
                    Architecture.SD3: FLOW_SAMPLERS}


def accepted(family: Family) -> dict[str, Sampler]:
    """The samplers `family` takes, by name."""
    return _BY_ARCHITECTURE[family.arch]


def sampler_refusal(name: str, family: Family) -> str | None:
    """Why models of `family` cannot run with the sampler `name` (naming those they take), or
    None when they can."""
    names = accepted(family)
    if name in names:
        return None
    listed = ", ".join(f"`{known}`" for known in names)
    if name in SAMPLERS:  # an SD sampler, on a flow-matching model
        return (f"{family.label} is a flow-matching model: it takes the sampler {listed} "
                f"(flow-matching Euler), not `{name}`")
    return f"Unknown sampler `{name}`. Accepted for {family.label}: {listed}"


def sampler(name: str, family: Family | None = None) -> Sampler:
    """The sampler `name` as models of `family` run it (any SD sampler without a family)."""
    names = SAMPLERS if family is None else accepted(family)
    try:
        return names[name]
    except KeyError:
        raise ValueError(
            f"Unknown sampler `{name}`. Accepted: {', '.join(names)}"
        ) from None


def make_scheduler(name: str, base_config: Any, family: Family | None = None) -> Any:
    """A fresh scheduler for one call, so no job ever changes the pipeline's shared one; with
    the settings `family` was distilled for (trailing timesteps for few-step models)."""
    import diffusers

    chosen = sampler(name, family)
    cls = getattr(diffusers, chosen.scheduler)
    config = dict(base_config)
    # Options a model's scheduler may carry that would change the named sampler's behaviour.
    for key in ("use_karras_sigmas", "algorithm_type", "use_lu_lambdas"):
        config.pop(key, None)
    options = dict(family.scheduler_options) if family is not None else {}
    return cls.from_config(config, **{**options, **dict(chosen.options)})
