"""Prompt encoding for the families whose prompt is one sentence for a T5 encoder (FLUX.1, SD 3.5;
`Family.sentences`): the pipeline's own `encode_prompt`, at the family's sequence length.

No 75-token chunks, no emphasis and no `::` blends here (`bot.engine.conditioning` does those for
CLIP models): T5 reads up to 512 tokens at once, and brackets are text to it. The bot refuses
`::` weights and, for FLUX.1, negative prompts before a job is saved; this refuses any that
still come, and prompts longer than the family reads (counted with the model's own tokenizer).

A prompt is encoded at the family's usual length (`Family.sequence`: what its pipeline defaults
to and its model card uses), or at its longest for a prompt that needs more: the padding is part
of what the transformer attends to, so the same prompt always gets the same length, whatever it
is batched with."""

from __future__ import annotations

from typing import Any

from bot.engine.conditioning import Conditioning
from bot.engine.families import Architecture, Family
from bot.engine.prompting import PromptError, parse_weighted_parts
from bot.engine.types import EngineError


def sentence(family: Family, prompt: str) -> str:
    """The text the encoders read: the prompt, or its one `::` part without the weight;
    raises `EngineError` for more parts."""
    try:
        parts = parse_weighted_parts(prompt)
    except PromptError as error:  # a prompt saved before its `::` parts were checked
        raise EngineError(str(error)) from None
    if len(parts) > 1:
        raise EngineError(family.weights_refusal())
    return parts[0].text if parts else prompt


def token_count(pipe: Any, family: Family, text: str) -> int:
    """Tokens of `text` (its end token included) for the encoder that limits it: T5 where the
    family reads the prompt with it, else CLIP (with its start token)."""
    tokenizer = pipe.tokenizer
    if family.t5:
        tokenizer = pipe.tokenizer_2 if family.arch is Architecture.FLUX else pipe.tokenizer_3
    return len(tokenizer(text, verbose=False).input_ids)


def sequence_length(pipe: Any, family: Family, texts: dict[str, str]) -> int:
    """The length the texts (`what` → text) are encoded at together; raises `EngineError` for
    one longer than the family reads."""
    longest = 0
    for what, text in texts.items():
        tokens = token_count(pipe, family, text)
        if tokens > family.max_tokens:
            raise EngineError(family.length_refusal(what, tokens))
        longest = max(longest, tokens)
    return family.sequence if longest <= family.sequence else family.max_tokens


def encode_flux(pipe: Any, family: Family, prompt: str, negative: str,
                device: Any) -> tuple[Conditioning, Conditioning]:
    """FLUX.1: T5's sequence and CLIP's pooled embedding; there is no negative prompt (the
    second `Conditioning` holds none)."""
    if negative.strip():
        raise EngineError(family.negative_refusal())
    text = sentence(family, prompt)
    length = sequence_length(pipe, family, {"The prompt": text})
    embeds, pooled, _ = pipe.encode_prompt(prompt=text, prompt_2=text, device=device,
                                           max_sequence_length=length)
    return Conditioning(embeds, pooled), Conditioning(None)


def encode_sd3(pipe: Any, family: Family, prompt: str, negative: str,
               device: Any) -> tuple[Conditioning, Conditioning]:
    """SD 3 / 3.5: both CLIPs' and T5's embeddings side by side (zeros for T5 when the model runs
    without it), for the prompt and the negative prompt."""
    text = sentence(family, prompt)
    length = sequence_length(pipe, family, {"The prompt": text, "The negative prompt": negative})
    embeds, negative_embeds, pooled, negative_pooled = pipe.encode_prompt(
        prompt=text, prompt_2=text, prompt_3=text, device=device,
        do_classifier_free_guidance=True, negative_prompt=negative, negative_prompt_2=negative,
        negative_prompt_3=negative, max_sequence_length=length)
    return Conditioning(embeds, pooled), Conditioning(negative_embeds, negative_pooled)
