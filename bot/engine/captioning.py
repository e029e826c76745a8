"""`/describe`: prompt suggestions for a picture from a captioning model (`SD_CAPTION_MODEL`: BLIP,
Florence-2 or another transformers image-to-text model), on the worker's thread like any work.

Suggestions are sampled (nucleus sampling, seeded), so that one picture gets several different
ones and `🔄` new ones. Captioners' habits that make poor prompts are cleaned up: BLIP's
"arafed" (a word it made up from its training captions) and a repeated word at the end."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bot.engine.pictures import decode_picture
from bot.engine.types import CaptionRequest, CaptionResult, EngineError

log = logging.getLogger(__name__)

MAX_NEW_TOKENS = 40
MIN_NEW_TOKENS = 4  # a random or unsure model may end at once: never an empty suggestion
TOP_P = 0.9
# Florence-2 answers a task named in its prompt; the others caption unprompted.
TASK_PROMPTS = {"florence2": "<MORE_DETAILED_CAPTION>"}
_NONSENSE = re.compile(r"\b(?:arafed|araffe|arafe|araf|arrafed)\b\s*", re.IGNORECASE)


def clean(caption: str) -> str:
    """A caption as a prompt: one line, no made-up words, no trailing full stop."""
    text = _NONSENSE.sub("", " ".join(caption.split()))
    text = re.sub(r"\b(\w+)( \1\b)+", r"\1", text)  # "a cat cat cat" → "a cat"
    return text.strip(" .").strip()


class Captioner:
    """The captioning model, loaded on first use."""

    def __init__(self, source: str | None, device: str, dtype: Any) -> None:
        self.source = source
        self.device = device
        self.dtype = dtype
        self._model: Any = None
        self._processor: Any = None

    def _load(self) -> None:
        if self.source is None:
            raise EngineError("/describe is not set up on this bot (SD_CAPTION_MODEL)")
        from transformers import AutoModelForImageTextToText, AutoProcessor

        started = time.perf_counter()
        source = Path(self.source).expanduser()
        where = str(source) if source.is_dir() else self.source
        try:
            self._processor = AutoProcessor.from_pretrained(where)
            self._model = AutoModelForImageTextToText.from_pretrained(where, dtype=self.dtype)
        except (OSError, ValueError) as error:
            log.error("cannot load the captioning model %s: %s", self.source, error)
            raise EngineError("The captioning model (SD_CAPTION_MODEL) could not be "
                              "loaded") from error
        self._model.to(self.device).eval()
        log.info("loaded the captioning model %s in %.1f s", self.source,
                 time.perf_counter() - started)

    def run(self, requests: Sequence[CaptionRequest]) -> dict[str, CaptionResult]:
        """Suggestions for every request's picture. Each is sampled from its own seed, in a
        call of its own: the same picture and seed give the same suggestions whatever else
        the batch holds (a sampling call has one random stream for all its rows)."""
        if self._model is None:
            self._load()
        task = TASK_PROMPTS.get(self._model.config.model_type)
        results = {}
        for request in requests:
            started = time.perf_counter()
            # Twice as many as needed, so that repeats can be left out.
            texts = self._sample(decode_picture(request.picture, "picture"), task,
                                 request.seed, 2 * request.suggestions)
            mine = [clean(text.removeprefix(task) if task else text) for text in texts]
            results[request.job_id] = CaptionResult(
                request.job_id, _pick(mine, request.suggestions),
                time.perf_counter() - started)
        return results

    def _sample(self, picture: Any, task: str | None, seed: int, samples: int) -> list[str]:
        import torch

        inputs = self._processor(images=[picture], text=[task] if task else None,
                                 return_tensors="pt").to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        with torch.random.fork_rng(devices=[]), torch.inference_mode():
            torch.manual_seed(seed)
            output = self._model.generate(
                **inputs, do_sample=True, top_p=TOP_P, num_return_sequences=samples,
                min_new_tokens=MIN_NEW_TOKENS, max_new_tokens=MAX_NEW_TOKENS)
        return list(self._processor.batch_decode(output, skip_special_tokens=True))


def _pick(captions: list[str], count: int) -> tuple[str, ...]:
    """`count` suggestions, different ones first; repeats only when there are not enough."""
    usable = [caption for caption in captions if caption] or ["a picture"]
    distinct = list(dict.fromkeys(usable))
    return tuple(distinct[number % len(distinct)] for number in range(count))
