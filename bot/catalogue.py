"""What users may pick: the models (`SD_MODEL` first, then `SD_MODELS`, each with its family
defaults, and the one `--draft` runs on), and the LoRAs in `LORA_DIR`."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from bot.config import ConfigError, Settings
from bot.engine.adapters import ARCHITECTURE_LABELS, AdapterConfig, architecture
from bot.engine.families import Architecture
from bot.engine.loras import LoraFolder, find_lora
from bot.engine.models import SINGLE_FILE_SUFFIXES, Family, ModelSpec, describe, model_name
from bot.prompt import PromptError

ACCEPTED_MAX = 1500  # characters of names listed in an error (Discord messages hold 2000)


class Catalogue:
    def __init__(self, specs: list[ModelSpec], lora_dir: Path | None = None,
                 adapters: AdapterConfig | None = None, draft: str | None = None) -> None:
        if not specs:
            raise ValueError("a catalogue needs at least one model")
        self._specs = {spec.name: spec for spec in specs}
        self.default = specs[0]
        self.lora_dir = lora_dir
        self.loras = LoraFolder(lora_dir)
        self.adapters = adapters or AdapterConfig()
        # SD_DRAFT_MODEL: what `--draft` runs on (None: each job's own model, in fewer steps)
        self.draft = self._specs[draft] if draft is not None else None

    @classmethod
    def from_settings(cls, settings: Settings) -> Catalogue:
        entries = [(model_name(settings.sd_model), settings.sd_model, "SD_MODEL")]
        entries += [(name, source, "SD_MODELS") for name, source in settings.sd_models]
        specs: list[ModelSpec] = []
        for name, source, variable in entries:
            if any(spec.name == name for spec in specs):
                raise ConfigError(f"{variable} names the model {name!r} twice")
            try:
                specs.append(describe(name, source))
            except (OSError, ValueError) as error:
                raise ConfigError(f"{variable}: cannot use {source!r}: {error}") from None
        specs = _with_inpainting(specs, settings.sd_inpaint_models)
        specs = _with_vaes(specs, settings.sd_vae)
        specs = _with_dtypes(specs, settings.sd_dtypes)
        specs = _without_t5(specs, settings.sd_no_t5)
        if settings.lora_dir is not None and not settings.lora_dir.is_dir():
            raise ConfigError(f"LORA_DIR must be a folder of LoRA .safetensors files, got "
                              f"{str(settings.lora_dir)!r}")
        return cls(specs, settings.lora_dir, _adapters(settings, architecture(specs[0])),
                   _named(specs, "SD_DRAFT_MODEL", settings.sd_draft_model))

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)

    def names(self) -> list[str]:
        return list(self._specs)

    def get(self, name: str | None) -> ModelSpec:
        """The model called `name` (the default for None); unknown names list what exists."""
        if name is None:
            return self.default
        spec = self._specs.get(name.lower())
        if spec is None:
            raise PromptError(f"Unknown model `{name}`. Accepted: {', '.join(self._specs)}")
        return spec

    def family_of(self, name: str) -> Family:
        """The family of model `name`, or the default model's when it is no longer configured
        (a job made before the server removed its model)."""
        spec = self._specs.get(name.lower())
        return (spec or self.default).family

    # ---- ControlNets, IP-Adapters, captioning ------------------------------------------------

    def check_control(self, spec: ModelSpec, control: str) -> None:
        """Refuse a control that no ControlNet serves for `spec`, naming those that are."""
        arch = architecture(spec)
        _check_unet(spec, "ControlNet")
        if self.adapters.controlnet(arch, control) is not None:
            return
        served = self.adapters.controls(arch)
        label = ARCHITECTURE_LABELS[arch]
        if not served:
            raise PromptError(f"ControlNet is not set up for {label} models like `{spec.name}` "
                              "(SD_CONTROLNETS)")
        raise PromptError(f"No `{control}` ControlNet for {label} models like `{spec.name}`. "
                          f"Accepted: {', '.join(served)}")

    def check_reference(self, spec: ModelSpec, what: str = "A `reference`") -> None:
        arch = architecture(spec)
        _check_unet(spec, what)
        if self.adapters.ip_adapter(arch) is None:
            raise PromptError(f"{what} needs an IP-Adapter, and none is set up for "
                              f"{ARCHITECTURE_LABELS[arch]} models like `{spec.name}` "
                              "(SD_IP_ADAPTER)")

    def annotated(self, control: str) -> bool:
        """Whether an annotator model makes `control`'s map (else the picture is the map)."""
        return self.adapters.annotator(control) is not None

    # ---- LoRAs --------------------------------------------------------------------------------

    def lora_names(self) -> list[str]:
        """LORA_DIR's LoRAs, listed again when the folder has changed. Blocking: call it in a
        worker thread."""
        return list(self.loras.files())

    async def refresh_loras(self) -> None:
        """Bring what `lora` checks names against up to date, reading the folder (only when it
        has changed) off the event loop: files added to LORA_DIR are usable at once. Call it
        before resolving a prompt."""
        if self.lora_dir is not None:
            await asyncio.to_thread(self.loras.files)

    def lora(self, name: str) -> str:
        """The LoRA file (its stem) `name` stands for, among the files `refresh_loras` found;
        unknown names list those there are. Never reads the disk."""
        if self.lora_dir is None:
            raise PromptError("LoRAs are not set up on this bot (LORA_DIR is not set)")
        files = self.loras.listed
        if files is None:
            raise RuntimeError("LORA_DIR has not been listed yet: await refresh_loras() first")
        found = find_lora(files, name)
        if found is None:
            raise PromptError(f"Unknown LoRA `{name}`. Accepted: {_listing(list(files))}")
        return found


def _check_unet(spec: ModelSpec, what: str) -> None:
    """Refuse ControlNets and IP-Adapters on the transformer families (FLUX.1, SD 3.x): their
    adapters take pipelines of their own, which the engine does not run."""
    if spec.family.arch is not Architecture.SD:
        raise PromptError(f"{what} works with SD 1.x, 2.x and SDXL models, not with "
                          f"{spec.family.label} models like `{spec.name}`")


def _adapters(settings: Settings, default_arch: str) -> AdapterConfig:
    """The adapters of the settings, a ControlNet without a family prefix being for SD_MODEL's
    architecture."""
    controlnets = tuple((family or default_arch, control, source)
                        for family, control, source in settings.sd_controlnets)
    if len({(family, control) for family, control, _ in controlnets}) != len(controlnets):
        raise ConfigError(f"SD_CONTROLNETS names a control twice for {default_arch} (entries "
                          f"without a family prefix are for SD_MODEL's, {default_arch})")
    return AdapterConfig(controlnets=controlnets, ip_adapters=settings.sd_ip_adapter,
                         annotators=settings.sd_annotators,
                         caption_model=settings.sd_caption_model)


def _with_vaes(specs: list[ModelSpec], vaes: tuple[tuple[str, str], ...]) -> list[ModelSpec]:
    """`specs` with the VAEs of SD_VAE (`default` stands for SD_MODEL's model)."""
    sources = dict(vaes)
    names = [spec.name for spec in specs]
    for name, source in sources.items():
        if name != "default" and name not in names:
            raise ConfigError(f"SD_VAE names the model {name!r}, which is not one of "
                              f"{', '.join(names)} (or default)")
        path = Path(source).expanduser()
        if path.suffix.lower() in SINGLE_FILE_SUFFIXES and not path.is_file():
            raise ConfigError(f"SD_VAE: cannot use {source!r}: the file does not exist")
    default = specs[0].name
    if "default" in sources and default in sources:
        raise ConfigError(f"SD_VAE names the model {default!r} twice (default is {default!r})")
    chosen = {default: sources.pop("default")} if "default" in sources else {}
    chosen.update(sources)
    return [replace(spec, vae=chosen[spec.name]) if spec.name in chosen else spec
            for spec in specs]


def _named(specs: list[ModelSpec], variable: str, name: str | None) -> str | None:
    """The model `variable` names (`default`: SD_MODEL's), refused when there is none."""
    if name is None:
        return None
    names = [spec.name for spec in specs]
    target = names[0] if name == "default" else name
    if target not in names:
        raise ConfigError(f"{variable} names the model {name!r}, which is not one of "
                          f"{', '.join(names)} (or default)")
    return target


def _with_dtypes(specs: list[ModelSpec], dtypes: tuple[tuple[str, str], ...]) -> list[ModelSpec]:
    """`specs` with the dtypes SD_DTYPE gives each by name (`default`: SD_MODEL's)."""
    chosen = {_named(specs, "SD_DTYPE", name): dtype for name, dtype in dtypes}
    return [replace(spec, dtype=chosen[spec.name]) if spec.name in chosen else spec
            for spec in specs]


def _without_t5(specs: list[ModelSpec], names: tuple[str, ...]) -> list[ModelSpec]:
    """`specs`, the SD 3 / 3.5 models SD_NO_T5 names (`default`: SD_MODEL's) without T5."""
    chosen = {_named(specs, "SD_NO_T5", name) for name in names}
    changed = []
    for spec in specs:
        if spec.name in chosen:
            try:
                spec = replace(spec, family=spec.family.without_t5())
            except ValueError as error:
                raise ConfigError(f"SD_NO_T5 names the model {spec.name!r}: {error} (only SD 3 "
                                  "and 3.5 models run without it)") from None
        changed.append(spec)
    return changed


def _listing(names: list[str]) -> str:
    """`a, b, c`, cut to fit a message (`… and 12 more`)."""
    if not names:
        return "none (LORA_DIR holds no .safetensors files)"
    used = 0
    for index, name in enumerate(names):
        used += len(name) + 2
        if used > ACCEPTED_MAX:
            return ", ".join(names[:index]) + f" … and {len(names) - index} more"
    return ", ".join(names)


def _with_inpainting(specs: list[ModelSpec],
                     inpainting: tuple[tuple[str, str], ...]) -> list[ModelSpec]:
    """`specs`, each given its dedicated inpainting checkpoint from SD_INPAINT_MODELS (`default`
    names SD_MODEL's model); an unknown name is refused, listing the models there are."""
    by_name = {spec.name: spec for spec in specs}
    for name, source in inpainting:
        target = specs[0].name if name == "default" else name
        if target not in by_name:
            raise ConfigError(f"SD_INPAINT_MODELS names {name!r}, which is not a model; "
                              f"models: default, {', '.join(by_name)}")
        by_name[target] = replace(by_name[target], inpaint=source)
    return list(by_name.values())
