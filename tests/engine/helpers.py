"""Requests and pixel comparisons for engine tests."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
from PIL import Image

from bot.engine.types import GeneratedImage, GenerationRequest


def make_request(job_id: str, seeds: tuple[int, ...] = (1,), **fields: object) -> GenerationRequest:
    """A small, quick txt2img request on the tiny model."""
    base = GenerationRequest(job_id=job_id, user_key="user", model="tiny", prompt="a red fox",
                             negative="", width=128, height=128, steps=4, guidance=7.0,
                             sampler="euler", seeds=seeds)
    return replace(base, **fields)  # type: ignore[arg-type]


def pixels(image: GeneratedImage | bytes) -> np.ndarray:
    data = image if isinstance(image, bytes) else image.png
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(np.int16)


def difference(a: GeneratedImage | bytes, b: GeneratedImage | bytes) -> int:
    """The largest difference of one channel of one pixel between two pictures."""
    return int(np.abs(pixels(a) - pixels(b)).max())

