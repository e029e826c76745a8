"""The text encoder: the pipelines' own embeddings for short prompts, long prompts in chunks,
AUTOMATIC1111 emphasis, `::` blends, and negative prompts of another length, for SD 1.x and SDXL."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bot import limits
from bot.engine.conditioning import (
    CHUNK,
    CHUNK_WIDTH,
    encode_pair,
    encode_prompt,
    token_chunks,
)
from bot.engine.prompting import parse_emphasis
from bot.engine.types import EngineError
from bot.engine.worker import Worker
from bot.prompt import chunks_at_least, tokens_at_least
from tests.models import ModelFiles

# The tiny models' vocabulary has one token per character, so a word of n letters is n tokens.
LONG = " ".join(["lighthouse", "harbour", "gulls", "stormy"] * 6)  # 168 tokens
SHORT = "a red fox in the snow"


@pytest.fixture(scope="module")
def sd1(tiny_worker: Worker) -> Any:
    return tiny_worker.model("tiny").pipe


@pytest.fixture(scope="module")
def xl(model_files: ModelFiles) -> Any:
    from diffusers import AutoPipelineForText2Image

    return AutoPipelineForText2Image.from_pretrained(model_files.xl)


def tokens(pipe: Any, text: str) -> int:
    return len(pipe.tokenizer(text, add_special_tokens=False, verbose=False).input_ids)


@pytest.fixture(params=["sd1", "xl"])
def pipe(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(request.param)


def own_embeddings(pipe: Any, text: str) -> tuple[Any, Any | None]:
    """What the pipeline's own `encode_prompt` gives (it cuts prompts at 77 tokens)."""
    if hasattr(pipe, "text_encoder_2"):
        embeds, _, pooled, _ = pipe.encode_prompt(prompt=text, device="cpu",
                                                  num_images_per_prompt=1,
                                                  do_classifier_free_guidance=False)
        return embeds, pooled
    embeds, _ = pipe.encode_prompt(text, "cpu", 1, False)
    return embeds, None


@pytest.mark.parametrize("text", [SHORT, "", "x" * CHUNK])
@torch.inference_mode()
def test_short_prompts_give_the_pipelines_own_embeddings(pipe: Any, text: str) -> None:
    ours = encode_prompt(pipe, text, "cpu")
    embeds, pooled = own_embeddings(pipe, text)
    assert ours.chunks == 1 and ours.embeds.shape[1] == CHUNK_WIDTH
    assert torch.equal(ours.embeds, embeds)
    if pooled is not None:
        assert torch.equal(ours.pooled, pooled)


@torch.inference_mode()
def test_long_prompts_are_chunked_not_cut(pipe: Any) -> None:
    assert tokens(pipe, LONG) > 2 * CHUNK
    ours = encode_prompt(pipe, LONG, "cpu")
    assert ours.chunks == 3 and ours.embeds.shape[1] == 3 * CHUNK_WIDTH
    # the end of the prompt counts: a different last word changes the last chunk only
    changed = encode_prompt(pipe, LONG.rsplit(" ", 1)[0] + " sunny", "cpu")
    first, last = slice(0, CHUNK_WIDTH), slice(2 * CHUNK_WIDTH, None)
    assert torch.equal(ours.embeds[:, first], changed.embeds[:, first])
    assert not torch.allclose(ours.embeds[:, last], changed.embeds[:, last])
    # while the pipeline itself only ever sees the first 75 tokens
    assert torch.equal(own_embeddings(pipe, LONG)[0],
                       own_embeddings(pipe, LONG.rsplit(" ", 1)[0] + " sunny")[0])
    if ours.pooled is not None:  # SDXL's pooled embedding is the first chunk's
        assert torch.equal(ours.pooled, changed.pooled)


def test_chunks_end_at_a_comma_near_the_limit(sd1: Any) -> None:
    phrase = "abcdefghi, "  # 10 tokens each, commas every 10
    chunks = token_chunks(sd1.tokenizer, parse_emphasis(phrase * 9))
    comma = sd1.tokenizer(",", add_special_tokens=False).input_ids[-1]
    assert [len(ids) for ids, _ in chunks] == [70, 20]  # not 75 + 15: no phrase is split
    assert chunks[0][0][-1] == comma
    plain = token_chunks(sd1.tokenizer, parse_emphasis("x" * 160))
    assert [len(ids) for ids, _ in plain] == [75, 75, 10]


def test_break_starts_a_chunk(sd1: Any) -> None:
    chunks = token_chunks(sd1.tokenizer, parse_emphasis("a red fox BREAK snow"))
    assert [len(ids) for ids, _ in chunks] == [7, 4]  # one token per letter


@torch.inference_mode()
def test_weights_change_the_embeddings(pipe: Any) -> None:
    plain = encode_prompt(pipe, "a red fox", "cpu").embeds
    heavy = encode_prompt(pipe, "a (red:1.5) fox", "cpu").embeds
    light = encode_prompt(pipe, "a [red] fox", "cpu").embeds
    assert heavy.shape == plain.shape == light.shape
    assert not torch.allclose(heavy, plain) and not torch.allclose(light, plain)
    assert not torch.allclose(heavy, light)
    # the weighted word moves most: positions 2–4 (`r e d` after the start token and `a`)
    moved = (heavy - plain).abs().mean(dim=-1)[0]
    assert moved[2:5].min() > 5 * moved[5:].max()
    # `(word)` is `(word:1.1)`, `(word:1)` is the word, and escaped brackets are text
    assert torch.equal(encode_prompt(pipe, "a (red) fox", "cpu").embeds,
                       encode_prompt(pipe, "a (red:1.1) fox", "cpu").embeds)
    assert torch.equal(encode_prompt(pipe, "a (red:1) fox", "cpu").embeds, plain)
    escaped = encode_prompt(pipe, r"a \(red\) fox", "cpu").embeds
    assert not torch.allclose(escaped, plain)  # the brackets are tokens of their own
    assert torch.equal(escaped, encode_prompt(pipe, r"a \(red\) fox::1", "cpu").embeds)


@torch.inference_mode()
def test_weights_work_inside_a_blend_and_a_long_prompt(pipe: Any) -> None:
    blend = encode_prompt(pipe, "a (red:1.4) fox::2 a dog", "cpu")
    plain_blend = encode_prompt(pipe, "a red fox::2 a dog", "cpu")
    assert not torch.allclose(blend.embeds, plain_blend.embeds)
    # parts of different lengths blend: the shorter is padded with empty chunks
    mixed = encode_prompt(pipe, f"{LONG}::1 a dog::1", "cpu")
    assert mixed.chunks == 3 and mixed.embeds.shape[1] == 3 * CHUNK_WIDTH
    weighted_end = encode_prompt(pipe, LONG + " (sunny:1.5)", "cpu")
    assert weighted_end.chunks == 3


@torch.inference_mode()
def test_the_negative_prompt_matches_the_prompts_length(pipe: Any) -> None:
    positive, negative = encode_pair(pipe, LONG, "blurry", "cpu")
    assert positive.embeds.shape == negative.embeds.shape
    assert (positive.chunks, negative.chunks) == (3, 1)
    positive, negative = encode_pair(pipe, SHORT, LONG, "cpu")
    assert positive.embeds.shape == negative.embeds.shape
    assert (positive.chunks, negative.chunks) == (1, 3)
    # the padding is an empty prompt's embeddings, as AUTOMATIC1111 pads
    empty = encode_prompt(pipe, "", "cpu").embeds
    assert torch.equal(positive.embeds[:, CHUNK_WIDTH:2 * CHUNK_WIDTH], empty[:, :CHUNK_WIDTH])


@torch.inference_mode()
def test_an_empty_negative_is_zeros_where_the_model_asks(sd1: Any, xl: Any) -> None:
    assert xl.config.force_zeros_for_empty_prompt
    positive, negative = encode_pair(xl, LONG, "", "cpu")
    assert negative.embeds.shape == positive.embeds.shape and not negative.embeds.any()
    assert negative.pooled is not None and not negative.pooled.any()
    # SD 1.x encodes the empty prompt, as its pipeline does
    _, negative = encode_pair(sd1, SHORT, "", "cpu")
    assert torch.equal(negative.embeds, own_embeddings(sd1, "")[0])


# ---- the chunk cap --------------------------------------------------------------------------

def test_at_most_eight_chunks_are_encoded(pipe: Any) -> None:
    eight = " BREAK ".join(["a fox"] * limits.PROMPT_CHUNKS_MAX)
    assert encode_prompt(pipe, eight, "cpu").chunks == limits.PROMPT_CHUNKS_MAX
    with pytest.raises(EngineError) as caught:
        encode_prompt(pipe, eight + " BREAK a fox", "cpu")
    assert str(caught.value) == (
        "The prompt needs 9 chunks of 75 tokens; at most 8 are allowed (each `BREAK` starts a "
        "new chunk, and each `::` part has chunks of its own)")
    # the `::` parts count together, each with its own chunks
    parts = "::1 ".join(["a fox BREAK a dog"] * 5)
    with pytest.raises(EngineError, match="needs 10 chunks"):
        encode_prompt(pipe, parts, "cpu")
    # a long text without any BREAK counts too (one token per letter in the tiny models)
    with pytest.raises(EngineError, match="needs 11 chunks"):
        encode_prompt(pipe, "x" * (10 * CHUNK + 1), "cpu")
    with pytest.raises(EngineError) as caught:
        encode_pair(pipe, "a fox", "blurry BREAK " * 9, "cpu")
    assert str(caught.value) == (
        "The negative prompt needs 9 chunks of 75 tokens; at most 8 are allowed (each `BREAK` "
        "starts a new chunk)")


def test_a_prompt_saved_with_too_many_parts_fails_with_a_reason(sd1: Any) -> None:
    with pytest.raises(EngineError, match="at most 8 `::` parts"):
        encode_prompt(sd1, "::1 ".join(["a fox"] * 9), "cpu")


_FRAGMENTS = st.sampled_from([
    " ", "BREAK", " BREAK ", "BREAKFAST", "a", "fox", "lighthouse", ",", ", ", "1", "42", "(", ")",
    "(red:1.3)", "[", "]", "\\(", "'s", "é", "e\u0301", "\u200b", "🦊", "日本", "²", "_", "\n",
    "<|endoftext|>", "&amp;",
])
_TEXTS = st.one_of(
    st.lists(st.one_of(_FRAGMENTS, st.text(max_size=4)), max_size=60).map("".join),
    st.text(max_size=200),
)


def _pretokens(tokenizer: Any, text: str) -> int:
    """How many pieces CLIP's tokenizer splits `text` into before its merges: each piece is at
    least one token, whatever the vocabulary (the tiny models' tokenizer splits as CLIP's)."""
    backend = tokenizer.backend_tokenizer
    return len(backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(text)))


_SCOPED = [HealthCheck.function_scoped_fixture]


@settings(max_examples=400, deadline=None, suppress_health_check=_SCOPED)
@given(_TEXTS)
@example("a BREAK")
@example("BREAK a BREAK BREAK")
@example("1" * 200)
def test_the_count_without_a_tokenizer_never_exceeds_the_real_one(sd1: Any, text: str) -> None:
    """What the bot refuses before a job is saved, the engine would refuse too."""
    assert chunks_at_least(text) <= len(token_chunks(sd1.tokenizer, parse_emphasis(text)))


@settings(max_examples=400, deadline=None, suppress_health_check=_SCOPED)
@given(_TEXTS)
def test_each_token_counted_is_a_piece_of_clips_tokenizer(sd1: Any, text: str) -> None:
    """The count holds for any CLIP vocabulary: every piece the tokenizer splits text into
    before its merges is at least one token, and the count is never more than those pieces."""
    assert tokens_at_least(text) <= _pretokens(sd1.tokenizer, text)


_SEGMENT = st.lists(st.text("abcdefghij", min_size=1, max_size=8), max_size=6).map(" ".join)


@settings(max_examples=200, deadline=None, suppress_health_check=_SCOPED)
@given(st.lists(_SEGMENT, min_size=1, max_size=40))
@example(["", ""] * 20)
@example(["a fox"] * 9)
def test_the_count_is_exact_for_breaks_between_short_words(sd1: Any,
                                                           segments: list[str]) -> None:
    text = " BREAK ".join(segments)
    assert chunks_at_least(text) == len(token_chunks(sd1.tokenizer, parse_emphasis(text)))
