"""Turning prompts into text embeddings: long prompts in 75-token chunks, AUTOMATIC1111 emphasis
`(word:1.3)`, and Midjourney `::` multi-prompt blends, for SD 1.x/2.x and SDXL pipelines.

For a short prompt without emphasis the embeddings are exactly those of the pipeline's own
`encode_prompt`, so pictures stay what they were. A prompt beyond CLIP's 77 tokens is cut into
chunks of 75 (each framed by its own start and end token, AUTOMATIC1111's way) that are encoded
separately and concatenated along the sequence, instead of being truncated. A prompt (all its
`::` parts together) and a negative prompt may each need at most `PROMPT_CHUNKS_MAX` chunks: the
bot refuses longer ones before they are saved, and this refuses any that still come."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.engine.prompting import (
    PROMPT_CHUNK_TOKENS,
    PROMPT_CHUNKS_MAX,
    PromptError,
    Span,
    chunks_message,
    parse_emphasis,
    parse_weighted_parts,
)
from bot.engine.types import EngineError

CHUNK = PROMPT_CHUNK_TOKENS  # prompt tokens per chunk; with its start and end token, CLIP's 77
CHUNK_WIDTH = CHUNK + 2
COMMA_BACKTRACK = 20  # a chunk that would split a phrase ends at a comma this close instead


@dataclass
class Conditioning:
    """Embeddings for one prompt (batch dimension 1); the pooled ones only for SDXL.

    `chunks` is how many 75-token chunks the text itself needed; `embeds` may be longer, padded
    with empty chunks to match the prompt it is paired with."""

    embeds: Any
    pooled: Any | None = None
    chunks: int = 1

    @property
    def length(self) -> int:
        """Sequence length in chunks: prompts of different lengths cannot share a batch."""
        return int(self.embeds.shape[1]) // CHUNK_WIDTH


@dataclass(frozen=True)
class _Encoder:
    tokenizer: Any
    model: Any
    penultimate: bool  # SDXL reads the hidden states before the last layer
    pooled: bool  # SDXL's second encoder also gives the pooled embedding


def _encoders(pipe: Any) -> list[_Encoder]:
    if getattr(pipe, "text_encoder_2", None) is not None:
        encoders = []
        if getattr(pipe, "text_encoder", None) is not None:
            encoders.append(_Encoder(pipe.tokenizer, pipe.text_encoder, True, False))
        encoders.append(_Encoder(pipe.tokenizer_2, pipe.text_encoder_2, True, True))
        return encoders
    return [_Encoder(pipe.tokenizer, pipe.text_encoder, False, False)]


def token_chunks(tokenizer: Any, spans: list[Span]) -> list[tuple[list[int], list[float]]]:
    """The prompt's tokens and their weights in chunks of at most 75 (AUTOMATIC1111's rules)."""
    comma = (tokenizer(",", add_special_tokens=False).input_ids or [None])[-1]
    chunks: list[tuple[list[int], list[float]]] = []
    ids: list[int] = []
    weights: list[float] = []
    last_comma = -1
    for span in spans:
        if span.new_chunk:
            chunks.append((ids, weights))
            ids, weights, last_comma = [], [], -1
        for token in tokenizer(span.text, add_special_tokens=False, verbose=False).input_ids:
            if token == comma:
                last_comma = len(ids)
            elif len(ids) == CHUNK and last_comma != -1 and CHUNK - last_comma <= COMMA_BACKTRACK:
                # Move the words after the last comma to the next chunk, keeping the phrase whole.
                cut = last_comma + 1
                chunks.append((ids[:cut], weights[:cut]))
                ids, weights, last_comma = ids[cut:], weights[cut:], -1
            if len(ids) == CHUNK:
                chunks.append((ids, weights))
                ids, weights, last_comma = [], [], -1
            ids.append(token)
            weights.append(span.weight)
    if ids or not chunks:
        chunks.append((ids, weights))
    return chunks


def _encode_chunks(encoder: _Encoder, chunks: list[tuple[list[int], list[float]]],
                   device: Any) -> tuple[Any, Any | None]:
    """(1, 77 × chunks, width) hidden states, and the pooled embedding of the first chunk."""
    import torch

    tokenizer = encoder.tokenizer
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    # Laid out as the pipeline's own tokenizer call pads: start, tokens, end, then padding.
    rows = [[tokenizer.bos_token_id, *ids, tokenizer.eos_token_id] + [pad] * (CHUNK - len(ids))
            for ids, _ in chunks]
    input_ids = torch.tensor(rows, device=device)
    kwargs: dict[str, Any] = {"output_hidden_states": encoder.penultimate}
    if getattr(encoder.model.config, "use_attention_mask", False):
        kwargs["attention_mask"] = (input_ids != pad).long()
    output = encoder.model(input_ids, **kwargs)
    hidden = output.hidden_states[-2] if encoder.penultimate else output[0]
    pooled = output[0][:1] if encoder.pooled else None

    for index, (_, weights) in enumerate(chunks):
        if all(weight == 1.0 for weight in weights):
            continue  # exactly the unweighted embeddings
        scale = torch.ones(CHUNK_WIDTH, dtype=hidden.dtype, device=hidden.device)
        scale[1:1 + len(weights)] = torch.tensor(weights, dtype=hidden.dtype)
        chunk = hidden[index]
        original_mean = chunk.mean()
        weighted = chunk * scale[:, None]
        new_mean = weighted.mean()
        # AUTOMATIC1111 keeps the mean, so emphasis shifts attention between words rather than
        # making the whole prompt louder.
        if new_mean.abs() > 1e-6:
            weighted = weighted * (original_mean / new_mean)
        hidden = torch.cat([hidden[:index], weighted[None], hidden[index + 1:]])
    return hidden.reshape(1, -1, hidden.shape[-1]), pooled


Tokens = list[list[tuple[list[int], list[float]]]]  # per text encoder, the chunks of one text


def _tokenize(pipe: Any, text: str) -> Tokens:
    """One prompt without `::` parts, in chunks for each text encoder (emphasis applied)."""
    spans = parse_emphasis(text)
    return [token_chunks(encoder.tokenizer, spans) for encoder in _encoders(pipe)]


def _chunk_count(tokens: Tokens) -> int:
    return max(len(chunks) for chunks in tokens)


def _check_chunks(what: str, needed: int, *, parts: bool = True) -> None:
    if needed > PROMPT_CHUNKS_MAX:
        raise EngineError(chunks_message(what, needed, parts=parts))


def _encode_tokens(pipe: Any, tokens: Tokens, device: Any) -> Conditioning:
    """One tokenized prompt through every text encoder."""
    import torch

    encoders = _encoders(pipe)
    encoded: list[tuple[int, Any, Any | None]] = [
        (len(chunks), *_encode_chunks(encoder, chunks, device))
        for encoder, chunks in zip(encoders, tokens, strict=True)]
    count = _chunk_count(tokens)
    if len(encoded) == 1:
        return Conditioning(encoded[0][1], encoded[0][2], count)
    # SDXL: the two encoders' hidden states side by side, each padded to the same length.
    hidden = [_pad_hidden(encoder, states, count, device)
              for encoder, (_, states, _) in zip(encoders, encoded, strict=True)]
    return Conditioning(torch.cat(hidden, dim=-1), encoded[-1][2], count)


def _encode_text(pipe: Any, text: str, device: Any) -> Conditioning:
    """One prompt without `::` parts: emphasis and chunks, through every text encoder."""
    return _encode_tokens(pipe, _tokenize(pipe, text), device)


def _pad_hidden(encoder: _Encoder, hidden: Any, chunks: int, device: Any) -> Any:
    import torch

    missing = chunks - hidden.shape[1] // CHUNK_WIDTH
    if missing <= 0:
        return hidden
    empty, _ = _encode_chunks(encoder, [([], [])], device)
    return torch.cat([hidden, empty.repeat(1, missing, 1)], dim=1)


def pad_to(pipe: Any, conditioning: Conditioning, length: int, device: Any) -> Conditioning:
    """`conditioning` lengthened to `length` chunks with the embeddings of an empty prompt (as
    AUTOMATIC1111 pads the shorter of the prompt and the negative prompt)."""
    import torch

    missing = length - conditioning.length
    if missing <= 0:
        return conditioning
    empty = _encode_text(pipe, "", device).embeds
    embeds = torch.cat([conditioning.embeds, empty.repeat(1, missing, 1)], dim=1)
    return Conditioning(embeds, conditioning.pooled, conditioning.chunks)


def encode_prompt(pipe: Any, prompt: str, device: Any) -> Conditioning:
    """Encode `prompt`; `a::2 b::1` blends each part's embeddings by its (normalised) weight.

    Raises `EngineError` when its parts together need more chunks than allowed."""
    try:
        parts = parse_weighted_parts(prompt) or ()
    except PromptError as error:  # a prompt saved before its `::` parts were checked
        raise EngineError(str(error)) from None
    texts = [part.text for part in parts] if len(parts) > 1 else [
        parts[0].text if parts else prompt]
    tokens = [_tokenize(pipe, text) for text in texts]
    _check_chunks("The prompt", sum(_chunk_count(part) for part in tokens))
    if len(parts) <= 1:
        return _encode_tokens(pipe, tokens[0], device)
    total = sum(part.weight for part in parts)
    encoded = [_encode_tokens(pipe, part, device) for part in tokens]
    length = max(cond.length for cond in encoded)
    encoded = [pad_to(pipe, cond, length, device) for cond in encoded]
    weights = [part.weight / total for part in parts]
    embeds = _weighted_sum([cond.embeds for cond in encoded], weights)
    pooled = None
    if encoded[0].pooled is not None:
        pooled = _weighted_sum([cond.pooled for cond in encoded], weights)
    return Conditioning(embeds, pooled, max(cond.chunks for cond in encoded))


def _weighted_sum(tensors: list[Any], weights: list[float]) -> Any:
    total = tensors[0] * weights[0]
    for tensor, weight in zip(tensors[1:], weights[1:], strict=True):
        total = total + tensor * weight
    return total


def encode_negative(pipe: Any, negative: str, device: Any) -> Conditioning:
    """Encode `negative` (`::` is plain text there); raises `EngineError` when it needs more
    chunks than allowed."""
    tokens = _tokenize(pipe, negative)
    _check_chunks("The negative prompt", _chunk_count(tokens), parts=False)
    return _encode_tokens(pipe, tokens, device)


def encode_pair(pipe: Any, prompt: str, negative: str,
                device: Any) -> tuple[Conditioning, Conditioning]:
    """The prompt and the negative prompt, as long as each other.

    An empty negative prompt is all zeros where the model asks for that
    (`force_zeros_for_empty_prompt`, as SDXL does), as the pipeline itself would do."""
    import torch

    positive = encode_prompt(pipe, prompt, device)
    zeros = not negative.strip() and bool(getattr(pipe.config, "force_zeros_for_empty_prompt",
                                                  False))
    if zeros:
        pooled = None if positive.pooled is None else torch.zeros_like(positive.pooled)
        return positive, Conditioning(torch.zeros_like(positive.embeds), pooled, 1)
    unconditional = encode_negative(pipe, negative, device)
    length = max(positive.length, unconditional.length)
    return pad_to(pipe, positive, length, device), pad_to(pipe, unconditional, length, device)
