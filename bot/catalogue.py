"""The models users may pick: `SD_MODEL` first, then `SD_MODELS`, each with its family defaults."""

from __future__ import annotations

from collections.abc import Iterator

from bot.config import ConfigError, Settings
from bot.engine.models import ModelSpec, describe, model_name
from bot.prompt import PromptError


class Catalogue:
    def __init__(self, specs: list[ModelSpec]) -> None:
        if not specs:
            raise ValueError("a catalogue needs at least one model")
        self._specs = {spec.name: spec for spec in specs}
        self.default = specs[0]

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
        return cls(specs)

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
