"""GPU faults: out of memory in a batch, and a pipeline that fails on one job."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
import torch

from bot.engine.executor import BATCH_FAILED
from tests.e2e.conftest import Atelier, finished, job_id_of, pixels, rows

pytestmark = pytest.mark.e2e


def patch_calls(atelier: Atelier, monkeypatch: pytest.MonkeyPatch,
                fail: Callable[[list[Any]], BaseException | None]) -> list[int]:
    """Make the worker's pipeline calls raise `fail(slots)` when it returns an exception;
    returns the sizes of the calls that ran."""
    assert atelier.bot is not None
    worker = atelier.bot.executor.worker
    assert worker is not None
    real_call = worker._call
    sizes: list[int] = []

    def call(loaded: Any, slots: list[Any], *rest: Any) -> Any:
        error = fail(slots)
        if error is not None:
            raise error
        sizes.append(len(slots))
        return real_call(loaded, slots, *rest)

    monkeypatch.setattr(worker, "_call", call)
    return sizes


async def test_out_of_memory_splits_the_batch_and_keeps_the_pictures(
        atelier: Atelier, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = await finished(await atelier.imagine("a red fox --seed 42"))
    sizes = patch_calls(atelier, monkeypatch, lambda slots: torch.cuda.OutOfMemoryError(
        "CUDA out of memory. Tried to allocate 2.00 GiB") if len(slots) > 1 else None)
    message = await finished(await atelier.imagine("a red fox --seed 42"))
    assert sizes == [1, 1, 1, 1]  # 4 → 2 + 2 → 1 + 1 + 1 + 1
    assert message.button_labels[0] == ["U1", "U2", "U3", "U4", "🔄"]
    # the same pictures as without the fault (up to batch-shape rounding, SPEC §5)
    assert abs(pixels(message.attachment_bytes()) - pixels(expected.attachment_bytes())).max() <= 2


async def test_out_of_memory_for_one_image_fails_that_job_only(
        atelier: Atelier, monkeypatch: pytest.MonkeyPatch) -> None:
    patch_calls(atelier, monkeypatch, lambda slots: torch.cuda.OutOfMemoryError(
        "CUDA out of memory") if slots[0][0].prompt == "too big" else None)
    failed = await finished(await atelier.imagine("too big", count=1))
    assert "Failed — Out of GPU memory for one 128×128 image" in failed.content
    assert failed.attachments == [] and failed.buttons == []
    [job] = rows(atelier, "SELECT status, error FROM jobs WHERE prompt = 'too big'")
    assert job["status"] == "failed" and "Out of GPU memory" in job["error"]
    # the worker lives on
    fine = await finished(await atelier.imagine("a small fox", count=1))
    assert fine.attachments


async def test_a_pipeline_error_fails_only_its_own_job(
        atelier: Atelier, monkeypatch: pytest.MonkeyPatch) -> None:
    assert atelier.bot is not None
    sizes = patch_calls(atelier, monkeypatch, lambda slots: RuntimeError("a broken tensor")
                        if any(request.prompt == "boom" for request, _ in slots) else None)
    # a long job (which cannot share a call with the others) keeps the worker busy, so the
    # next two wait and are batched together
    blocker = await atelier.imagine("a slow one", steps=150)
    bad = await atelier.imagine("boom", count=2, user=atelier.double.bob)
    good = await atelier.imagine("a calm lake", count=2, user=atelier.double.mod)
    results = await asyncio.gather(finished(bad, 60), finished(good, 60), finished(blocker, 60))
    assert "Failed — The image pipeline failed on this job" in results[0].content
    assert results[1].attachments and "job `" in results[1].content
    assert sizes[-1] == 2  # the good job ran again on its own after the batch failed
    [row] = rows(atelier, "SELECT status FROM jobs WHERE id = ?", job_id_of(results[1]))
    assert row["status"] == "done"


async def test_a_failure_shows_a_short_reason_that_fits_whatever_the_prompt(
        atelier: Atelier, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    assert atelier.bot is not None
    worker = atelier.bot.executor.worker
    assert worker is not None
    detail = "NCCL timeout on ray://10.7.0.3:10001 reading /srv/atelier/secret.safetensors "

    def run(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(detail + "x" * 2000)

    monkeypatch.setattr(worker, "run", run)
    prompt = "a_*" * 333 + "a"  # 1000 characters, 1666 once its markdown is escaped
    failed = await finished(await atelier.imagine(prompt, count=1), 60)
    job_id = rows(atelier, "SELECT id FROM jobs")[0][0]
    assert failed.content.endswith(f"…** — <@{atelier.double.alice.id}>\n"
                                   f"Failed — {BATCH_FAILED} · job `{job_id}`")
    assert len(failed.content) <= 2000 and failed.content.startswith("**a\\_\\*a\\_\\*")
    assert failed.buttons == [] and failed.attachments == []
    assert "10.7.0.3" not in failed.content and "10.7.0.3" in caplog.text
    [job] = rows(atelier, "SELECT status, error FROM jobs")
    assert (job["status"], job["error"]) == ("failed", BATCH_FAILED)
