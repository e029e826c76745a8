"""A model's first use downloads it from the hub (a hub double here): the log says how far it
got every few percent, and the placeholders and `/info` say "loading model (N %)" meanwhile."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from tests.double import DiscordDouble
from tests.e2e.conftest import running_atelier, settings_for
from tests.e2e.test_info import info
from tests.hub import HubDouble

pytestmark = pytest.mark.e2e

WEIGHTS = "unet/diffusion_pytorch_model.safetensors"


def downloading(content: str, before: str) -> bool:
    """Whether a placeholder says the model is part-way through its download (the first 90 %
    of the way; loading the parts from disk is the rest)."""
    found = re.search(rf"\n{re.escape(before)}loading model \((\d+) %\)$", content)
    return found is not None and 0 < int(found[1]) < 90


async def test_a_download_shows_how_far_it_got(
        discord_double: DiscordDouble, data_dir: Path, hub_double: HubDouble,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bot.engine.loading")
    gate = hub_double.hold(WEIGHTS)  # the UNet's weights stop part-way until released
    settings = settings_for(discord_double, data_dir, sd_models=(("hub", "atelier/tiny"),))
    async with running_atelier(discord_double, settings) as atelier:
        first = await (await atelier.imagine("a red fox --model hub --steps 2 --n 1")).original()
        second = await (await atelier.imagine("a blue whale --steps 2 --n 1",
                                              user=discord_double.bob)).original()
        try:
            # part-way through the download (the weights held back)
            await first.wait_until(lambda m: downloading(m.content, "Starting — "), 60)
            await second.wait_until(lambda m: downloading(m.content, "Queued — position 1 · "),
                                    60)
            workers = (await info(atelier))["Workers"]
            assert re.search(r"`local` .* — busy, loading model \(\d+ %\)", workers), workers
        finally:
            gate.set()
        done = await first.wait_until(lambda m: " · job `" in m.content, 60)
        other = await second.wait_until(lambda m: " · job `" in m.content, 60)
        assert done.attachments and other.attachments
    assert any(request.startswith("GET /atelier/tiny/resolve/") and WEIGHTS in request
               for request in hub_double.requests)
    lines = [record.getMessage() for record in caplog.records
             if record.name == "bot.engine.loading" and " model hub: " in record.getMessage()]
    downloads = [int(line.split(": ")[1].split(" %")[0]) for line in lines
                 if line.startswith("downloading model hub: ")]
    assert downloads and downloads == sorted(downloads) and downloads[-1] < 90, lines
    assert lines[-1] == "loading model hub: 100 % (5 of 5 components)", lines
