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
        """Suggestions for every request's picture, in one call of the model."""
        import torch

        if self._model is None:
            self._load()
        started = time.perf_counter()
        pictures = [decode_picture(request.picture, "picture") for request in requests]
        wanted = max(request.suggestions for request in requests)
        task = TASK_PROMPTS.get(self._model.config.model_type)
        inputs = self._processor(images=pictures, text=[task] * len(pictures) if task else None,
                                 return_tensors="pt").to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        # Twice as many as needed, so that repeats can be left out.
        samples = 2 * wanted
        with torch.random.fork_rng(devices=[]), torch.inference_mode():
            torch.manual_seed(requests[0].seed)
            output = self._model.generate(
                **inputs, do_sample=True, top_p=TOP_P, num_return_sequences=samples,
                min_new_tokens=MIN_NEW_TOKENS, max_new_tokens=MAX_NEW_TOKENS)
        texts = self._processor.batch_decode(output, skip_special_tokens=True)
        seconds = (time.perf_counter() - started) / len(requests)
        results = {}
        for number, request in enumerate(requests):
            mine = [clean(text) for text in texts[number * samples:(number + 1) * samples]]
            if task:
                mine = [text.removeprefix(task).strip() for text in mine]
            results[request.job_id] = CaptionResult(
                request.job_id, _pick(mine, request.suggestions), seconds)
        return results


def _pick(captions: list[str], count: int) -> tuple[str, ...]:
    """`count` suggestions, different ones first; repeats only when there are not enough."""
    usable = [caption for caption in captions if caption] or ["a picture"]
    distinct = list(dict.fromkeys(usable))
    return tuple(distinct[number % len(distinct)] for number in range(count))
