"""The pure parts of pictures as prompts: control maps made without models, the IP-Adapter's scale
for a style reference, adapter sources, captions made into prompts, and the catalogue's refusals."""

from __future__ import annotations

import io
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image, ImageDraw

from bot.catalogue import Catalogue
from bot.config import ConfigError, Settings
from bot.engine.adapters import AdapterConfig
from bot.engine.captioning import _pick, clean
from bot.engine.control import control_map
from bot.engine.models import describe
from bot.engine.references import _source_parts, adapter_scale
from bot.engine.types import Control, EngineError, Reference
from bot.prompt import PromptError


def png(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def sketch(size: tuple[int, int] = (200, 100)) -> bytes:
    """Dark lines on a light page."""
    picture = Image.new("RGB", size, "white")
    ImageDraw.Draw(picture).line((10, 50, 190, 50), fill="black", width=5)
    return png(picture)


def test_maps_are_made_at_the_job_size_from_the_picture_fitted_to_it() -> None:
    edges = np.asarray(control_map(Control("canny", sketch()), 64, 96))
    assert edges.shape == (96, 64, 3) and set(np.unique(edges)) <= {0, 255}
    lines = np.asarray(control_map(Control("lineart", sketch()), 100, 50).convert("L"))
    assert lines[25, 50] > 200 and lines[5, 5] < 50  # white lines on black
    scribble = np.asarray(control_map(Control("scribble", sketch()), 100, 50).convert("L"))
    assert set(np.unique(scribble)) <= {0, 255}
    same = control_map(Control("as-is", sketch()), 200, 100)
    assert np.array_equal(np.asarray(same), np.asarray(Image.open(io.BytesIO(sketch()))))


def test_a_map_from_an_unreadable_picture_fails_the_job_with_a_reason() -> None:
    with pytest.raises(EngineError, match="control image of this job cannot be read"):
        control_map(Control("canny", b"not a picture"), 64, 64)


def unet_with(*attentions: int) -> SimpleNamespace:
    return SimpleNamespace(up_blocks=[SimpleNamespace(attentions=[None] * n) if n
                                      else SimpleNamespace() for n in attentions])


def test_a_style_reference_acts_in_one_layer_where_style_is_drawn() -> None:
    sdxl = unet_with(3, 3, 0)  # up_blocks.0 has three attention layers
    assert adapter_scale(Reference((b"",), 1.0), sdxl) == pytest.approx(0.6)
    assert adapter_scale(Reference((b"",), 2.0, style=100.0), sdxl) == {
        "up": {"block_0": [0.0, 2.0, 0.0]}}
    sd15 = unet_with(0, 3, 3, 3)  # the first up block has none
    assert adapter_scale(Reference((b"",), 1.0, style=400.0), sd15) == {
        "up": {"block_1": [0.0, 2.0, 0.0]}}


def test_adapter_sources(tmp_path: Path) -> None:
    assert _source_parts("h94/IP-Adapter/models/ip-adapter_sd15.safetensors") == (
        None, "h94/IP-Adapter", "models", "ip-adapter_sd15.safetensors")
    (tmp_path / "image_encoder").mkdir()
    (tmp_path / "ip-adapter_plus.safetensors").write_bytes(b"")
    assert _source_parts(str(tmp_path)) == (tmp_path, "", "", "ip-adapter_plus.safetensors")
    with pytest.raises(EngineError, match="a hub repo/subfolder/file.safetensors"):
        _source_parts("h94/IP-Adapter")


def test_captions_become_prompts() -> None:
    assert clean("arafed man riding a horse horse .") == "man riding a horse"
    assert clean("  a   cat\non a mat. ") == "a cat on a mat"
    assert _pick(["a", "a", "b", ""], 4) == ("a", "b", "a", "b")
    assert _pick(["", ""], 2) == ("a picture", "a picture")


def catalogue(**settings: object) -> Catalogue:
    return Catalogue.from_settings(Settings(discord_token="t", sd_model="tiny",
                                            **settings))  # type: ignore[arg-type]


def test_the_catalogue_refuses_what_no_adapter_serves() -> None:
    tiny = describe("tiny", "tiny")
    bare = catalogue()
    with pytest.raises(PromptError, match=r"ControlNet is not set up for tiny models like `tiny` "
                                          r"\(SD_CONTROLNETS\)"):
        bare.check_control(tiny, "canny")
    with pytest.raises(PromptError, match="none is set up for tiny models"):
        bare.check_reference(tiny)
    served = catalogue(sd_controlnets=((None, "canny", "a"), ("sdxl", "depth", "b")),
                       sd_ip_adapter=(("tiny", "c"),))
    assert served.adapters == AdapterConfig(
        controlnets=(("tiny", "canny", "a"), ("sdxl", "depth", "b")), ip_adapters=(("tiny", "c"),))
    served.check_control(tiny, "canny")
    served.check_reference(tiny)
    with pytest.raises(PromptError, match="No `depth` ControlNet for tiny models like `tiny`. "
                                          "Accepted: canny"):
        served.check_control(tiny, "depth")
    with pytest.raises(ConfigError, match="SD_CONTROLNETS names a control twice"):
        catalogue(sd_controlnets=((None, "canny", "a"), ("tiny", "canny", "b")))


@pytest.mark.parametrize(("source", "label"), [
    ("black-forest-labs/FLUX.1-schnell", "FLUX.1 [schnell]"),
    ("stabilityai/stable-diffusion-3.5-large", "SD 3.5 Large"),
])
def test_the_transformer_families_take_no_controlnet_or_reference(source: str,
                                                                  label: str) -> None:
    model = describe("big", source)
    served = catalogue(sd_controlnets=(("flux", "canny", "a"), ("sd3", "canny", "b")),
                       sd_ip_adapter=(("flux", "c"), ("sd3", "d")))
    with pytest.raises(PromptError, match=rf"ControlNet works with SD 1.x, 2.x and SDXL models, "
                                          rf"not with {re.escape(label)} models like `big`"):
        served.check_control(model, "canny")
    with pytest.raises(PromptError, match=r"`/blend` works with SD 1.x, 2.x and SDXL models"):
        served.check_reference(model, "`/blend`")
