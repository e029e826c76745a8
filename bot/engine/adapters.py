"""Models that add to a picture model rather than draw on their own — ControlNets, IP-Adapters and
the annotators that make control maps — and which architecture of model each one serves.

A ControlNet or an IP-Adapter is trained for one architecture (SD 1.x, SDXL…): the settings name
them per architecture (`SD_CONTROLNETS=sdxl:canny=…`, `SD_IP_ADAPTER=sd1=…`), and a job's model
picks the one of its own."""

from __future__ import annotations

from dataclasses import dataclass

from bot.engine.families import Architecture
from bot.engine.models import ModelSpec

# The architectures adapters are named for (SPEC §2: the `SD_CONTROLNETS` family prefixes). The
# tiny test model is one of its own: adapters for it are built from its UNet.
ARCHITECTURES = ("sd1", "sd2", "sdxl", "sd3", "flux", "tiny")
ARCHITECTURE_LABELS = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL", "sd3": "SD 3",
                       "flux": "FLUX.1", "tiny": "tiny"}
# Control maps an annotator model can make (a transformers depth estimator, a VitPose pose
# estimator); without one the control picture is taken as the map itself.
ANNOTATED = ("depth", "pose")


def architecture(spec: ModelSpec) -> str:
    """The architecture `spec`'s weights have: its family's name, or for a few-step model
    (turbo, LCM) the architecture it was distilled from."""
    if spec.family.name in ARCHITECTURES:
        return spec.family.name
    if spec.family.arch is not Architecture.SD:  # FLUX.1 [dev] and [schnell], SD 3 and 3.5
        return spec.family.arch.value
    if spec.sdxl:
        return "sdxl"
    return "sd2" if spec.family.label.startswith("SD 2") else "sd1"


@dataclass(frozen=True)
class AdapterConfig:
    """Where the engine finds the adapters (from `SD_CONTROLNETS`, `SD_IP_ADAPTER`,
    `SD_ANNOTATORS` and `SD_CAPTION_MODEL`): each a hub id, a folder or a file."""

    controlnets: tuple[tuple[str, str, str], ...] = ()  # (architecture, control, source)
    ip_adapters: tuple[tuple[str, str], ...] = ()  # (architecture, source)
    annotators: tuple[tuple[str, str], ...] = ()  # (control, source)
    caption_model: str | None = None

    def controlnet(self, arch: str, control: str) -> str | None:
        return next((source for a, c, source in self.controlnets
                     if a == arch and c == control), None)

    def controls(self, arch: str) -> list[str]:
        """The controls served for models of `arch`."""
        return [control for a, control, _ in self.controlnets if a == arch]

    def ip_adapter(self, arch: str) -> str | None:
        return next((source for a, source in self.ip_adapters if a == arch), None)

    def annotator(self, control: str) -> str | None:
        return next((source for c, source in self.annotators if c == control), None)
