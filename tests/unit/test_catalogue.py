"""The model catalogue as configured: a broken model file stops start-up with one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.catalogue import Catalogue
from bot.config import ConfigError, Settings


@pytest.mark.parametrize("content", [b"", b"\x01\x02", b"\xff" * 8 + b"{not json"])
def test_a_broken_safetensors_file_is_named_in_one_line(tmp_path: Path, content: bytes) -> None:
    broken = tmp_path / "anime.safetensors"
    broken.write_bytes(content)
    settings = Settings(discord_token="x", sd_model="tiny", sd_models=(("anime", str(broken)),))
    with pytest.raises(ConfigError) as caught:
        Catalogue.from_settings(settings)
    message = str(caught.value)
    assert message.startswith("SD_MODELS: cannot use") and "anime.safetensors" in message
    assert "\n" not in message


def test_a_missing_model_file_is_named(tmp_path: Path) -> None:
    settings = Settings(discord_token="x", sd_model=str(tmp_path / "gone.safetensors"))
    with pytest.raises(ConfigError, match="SD_MODEL: cannot use .*gone.safetensors"):
        Catalogue.from_settings(settings)
