"""Sampler names users know, mapped onto diffusers schedulers built from a model's own config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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


def sampler(name: str) -> Sampler:
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(
            f"Unknown sampler `{name}`. Accepted: {', '.join(SAMPLERS)}"
        ) from None


def make_scheduler(name: str, base_config: Any) -> Any:
    """A fresh scheduler for one call, so no job ever changes the pipeline's shared one."""
    import diffusers

    chosen = sampler(name)
    cls = getattr(diffusers, chosen.scheduler)
    config = dict(base_config)
    # Options a model's scheduler may carry that would change the named sampler's behaviour.
    for key in ("use_karras_sigmas", "algorithm_type", "use_lu_lambdas"):
        config.pop(key, None)
    return cls.from_config(config, **dict(chosen.options))
