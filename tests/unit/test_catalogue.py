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


def test_inpainting_models_attach_to_their_models(tmp_path: Path) -> None:
    from bot.config import load_settings

    env_file = tmp_path / ".env"
    env_file.write_text("")
    settings = load_settings({
        "DISCORD_TOKEN": "x", "SD_MODEL": "tiny", "SD_MODELS": "other=tiny",
        "SD_INPAINT_MODELS": "default=tiny-inpaint, other=/models/inpaint.safetensors",
    }, env_file)
    catalogue = Catalogue.from_settings(settings)
    assert catalogue.get(None).inpaint == "tiny-inpaint"
    assert catalogue.get("other").inpaint == "/models/inpaint.safetensors"


def test_an_inpainting_model_for_an_unknown_model_is_refused() -> None:
    settings = Settings(discord_token="x", sd_model="tiny",
                        sd_inpaint_models=(("anime", "/models/inpaint.safetensors"),))
    with pytest.raises(ConfigError, match=r"^SD_INPAINT_MODELS names 'anime', which is not a "
                                          r"model; models: default, tiny$"):
        Catalogue.from_settings(settings)


def test_sd_vae_gives_models_their_vae(tmp_path: Path) -> None:
    settings = Settings(discord_token="x", sd_model="tiny", sd_models=(("second", "tiny"),),
                        sd_vae=(("default", "madebyollin/sdxl-vae-fp16-fix"),
                                ("second", str(tmp_path))))
    catalogue = Catalogue.from_settings(settings)
    assert catalogue.get("tiny").vae == "madebyollin/sdxl-vae-fp16-fix"
    assert catalogue.get("second").vae == str(tmp_path)


@pytest.mark.parametrize(("vae", "message"), [
    (("anime", "some/vae"), "SD_VAE names the model 'anime', which is not one of tiny, second "
                            "(or default)"),
    (("second", "/nowhere/vae.safetensors"), "SD_VAE: cannot use '/nowhere/vae.safetensors': "
                                             "the file does not exist"),
])
def test_a_wrong_sd_vae_is_named_in_one_line(vae: tuple[str, str], message: str) -> None:
    settings = Settings(discord_token="x", sd_model="tiny", sd_models=(("second", "tiny"),),
                        sd_vae=(vae,))
    with pytest.raises(ConfigError) as caught:
        Catalogue.from_settings(settings)
    assert str(caught.value) == message
