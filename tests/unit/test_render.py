"""The words on Atelier's messages (SPEC §6)."""

from __future__ import annotations

from dataclasses import replace

from bot import render
from storage import JobRecord


def job(prompt: str = "a red fox", count: int = 4, seed: int = 42) -> JobRecord:
    return JobRecord(id="k3f9x2ab", guild_id=1, channel_id=2, user_id=3, kind="imagine",
                     prompt=prompt, negative="", model="tiny", sampler="euler", width=128,
                     height=128, steps=30, guidance=7.0, seed=seed, count=count, created_at=0.0)


def test_result_line_is_exactly_the_specs() -> None:
    assert render.result_text(job()) == "**a red fox** — <@3> · seeds 42–45 · job `k3f9x2ab`"
    assert render.result_text(job(count=1)) == "**a red fox** — <@3> · seed 42 · job `k3f9x2ab`"


def test_placeholder_texts() -> None:
    assert render.queued_text(job(), 2).endswith("\nQueued — position 2")
    assert render.queued_text(job(), 2, loading="loading model (42 %)").endswith(
        "\nQueued — position 2 · loading model (42 %)")
    assert render.starting_text(job(), "loading model (42 %)").endswith(
        "\nStarting — loading model (42 %)")
    assert render.progress_text(job(), 12, 30).endswith("\nstep 12/30")
    assert render.cancelled_text(job()).endswith("\nCancelled")


def test_markdown_and_mentions_in_prompts_are_shown_as_typed() -> None:
    text = render.result_text(job("**bold** @everyone"))
    assert text.startswith("**\\*\\*bold\\*\\* @\u200beveryone** — <@3>")


def test_the_result_fits_a_discord_message_whatever_the_prompt() -> None:
    text = render.result_text(job("_" * 1000), hidden=[1, 2, 3, 4])
    assert len(text) <= 2000
    assert "· job `k3f9x2ab`" in text


def test_unknown_ids_are_echoed_as_given() -> None:
    assert render.no_job_text("a_b") == "No job `a_b` in this server."
    assert render.no_job_text("x`y") == "No job `xy` in this server."


REASON = "The image engine failed: "


def test_every_job_message_fits_whatever_the_prompt_and_the_reason() -> None:
    long = job("*_" * 500)  # 1000 characters, twice as many once escaped
    texts = [
        render.failed_text(long, REASON + "x" * 5000),
        render.queued_text(long, 12, engine_retrying=True),
        render.progress_text(long, 12, 30),
        render.restarting_text(long),
        render.cancelled_text(long),
        render.moved_text(long),
        render.result_text(long, hidden=[1, 2, 3, 4], prompt_chunks=9),
        render.single_image_text(long, 2, user_id=4),
    ]
    for text in texts:
        assert len(text) <= render.MESSAGE_MAX, text[-200:]
        assert text.startswith("**\\*\\_\\*\\_")
    failed = texts[0]
    reason = REASON + "x" * (render.REASON_MAX - 1 - len(REASON)) + "…"
    assert failed.endswith(f"…** — <@3>\nFailed — {reason} · job `k3f9x2ab`")


def test_a_waiting_job_says_when_the_engine_is_starting_again() -> None:
    assert render.queued_text(job(), 1, engine_retrying=True).endswith(
        "\nQueued — position 1 · the image engine is starting (retrying)")
    assert render.moved_text(job()) == "**a red fox** — <@3>\n-# continued in a new message below"


def test_a_reason_is_one_short_line() -> None:
    assert render.shorten("no  such\nfile", 100) == "no such file"
    assert render.shorten("abcdef", 4) == "abc…"


def test_edits_are_named_as_their_buttons() -> None:
    assert render.edit_text("region 1,5") == "Vary (Region) of cells 1, 5"
    assert render.edit_text("region painted") == "Vary (Region) of a painted area"
    painted = replace(job(), kind="region", edit="region painted", parent_job="abc12345",
                      parent_index=2)
    assert render.lineage_text(painted) == (
        "Vary (Region) of a painted area of job `abc12345`, image 2")
