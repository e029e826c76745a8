"""GPU faults: out of memory while denoising or decoding, and a pipeline that fails on one job.

Running out of memory cannot happen on purpose here: hooks on the real model raise the error
CUDA raises, at the point where a card would run out."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

from bot.engine.executor import BATCH_FAILED
from bot.engine.types import EngineError, GenerationRequest
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

    def start(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(detail + "x" * 2000)

    monkeypatch.setattr(worker, "start", start)
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


def oom() -> torch.cuda.OutOfMemoryError:
    return torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


@pytest.fixture
def model(atelier: Atelier) -> Iterator[Any]:
    """The tiny pipeline the bot's worker runs (loaded by a first job); hooks are removed after."""
    assert atelier.bot is not None and atelier.bot.executor.worker is not None
    handles: list[Any] = []
    pipe = atelier.bot.executor.worker.model("tiny").pipe
    pipe.handles = handles
    yield pipe
    for handle in handles:
        handle.remove()


async def test_a_decode_out_of_memory_is_retried_without_denoising_again(
        atelier: Atelier, model: Any) -> None:
    expected = await finished(await atelier.imagine("a red fox --seed 42 --steps 5"))
    unet_calls: list[int] = []
    decodes: list[tuple[int, ...]] = []

    def count_steps(module: Any, args: Any) -> None:
        unet_calls.append(args[0].shape[0])

    def decode(module: Any, args: Any) -> None:
        decodes.append(tuple(args[0].shape))
        if len(decodes) == 1:  # the first picture's decode runs the card out of memory
            raise oom()

    model.handles += [model.unet.register_forward_pre_hook(count_steps),
                      model.vae.decoder.register_forward_pre_hook(decode)]
    message = await finished(await atelier.imagine("a red fox --seed 42 --steps 5"))
    assert len(unet_calls) == 5  # denoised once: 5 steps of one batched call
    assert len(decodes) == 5 and all(shape[0] == 1 for shape in decodes)  # 1 failed + 4
    assert message.button_labels[0] == ["U1", "U2", "U3", "U4", "🔄"]
    assert abs(pixels(message.attachment_bytes()) - pixels(expected.attachment_bytes())).max() <= 2


async def test_memory_of_a_failed_call_is_freed_before_the_retry(
        atelier: Atelier, model: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The traceback of an out-of-memory error holds the failed call's activations: memory is
    given back (`torch.cuda.empty_cache`) once they are gone, or it gives back nothing."""
    worker = atelier.bot.executor.worker if atelier.bot else None
    assert worker is not None
    held: list[weakref.ref[torch.Tensor]] = []
    alive_when_freeing: list[bool] = []
    free_memory = worker._free_memory

    def keep_an_activation(module: Any, args: Any, output: torch.Tensor) -> None:
        if not held:
            held.append(weakref.ref(output))  # lives in the UNet's frame, nowhere else

    def run_out(module: Any, args: Any) -> None:
        if not alive_when_freeing and args[0].shape[0] > 4:
            raise oom()  # the 4-image call (8 rows with guidance); its halves go on

    def freeing() -> None:
        alive_when_freeing.append(held[0]() is not None)
        free_memory()

    monkeypatch.setattr(worker, "_free_memory", freeing)
    model.handles += [model.unet.conv_in.register_forward_hook(keep_an_activation),
                      model.unet.mid_block.register_forward_pre_hook(run_out)]
    message = await finished(await atelier.imagine("a red fox --seed 42 --steps 3"))
    assert message.attachments
    assert alive_when_freeing == [False]


async def test_the_error_of_an_out_of_memory_job_holds_no_tensors(
        atelier: Atelier, model: Any) -> None:
    worker = atelier.bot.executor.worker if atelier.bot else None
    assert worker is not None

    def run_out(module: Any, args: Any) -> None:
        raise oom()

    model.handles.append(model.unet.mid_block.register_forward_pre_hook(run_out))
    request = GenerationRequest(job_id="big", user_key="u", model="tiny", prompt="a fox",
                                negative="", width=128, height=128, steps=2, guidance=7.0,
                                sampler="euler", seeds=(1,))
    outcome = (await asyncio.to_thread(worker.run, [request]))["big"]
    assert isinstance(outcome, EngineError)
    assert str(outcome).startswith("Out of GPU memory for one 128×128 image")
    # no cause, context or traceback that would keep the failed call's frames alive
    assert (outcome.__cause__, outcome.__context__, outcome.__traceback__) == (None, None, None)


def illegal_access() -> BaseException:
    """What CUDA raises after a kernel wrote where it must not; the context stays broken."""
    return torch.AcceleratorError(
        "CUDA error: an illegal memory access was encountered\nCUDA kernel errors might be "
        "asynchronously reported at some other API call")


async def test_a_cuda_error_ends_the_worker_and_the_job_runs_again_on_a_new_one(
        atelier: Atelier, model: Any) -> None:
    assert atelier.bot is not None
    broken = atelier.bot.executor.worker
    expected = await finished(await atelier.imagine("a red fox --seed 42", count=1))

    def fault(module: Any, args: Any) -> None:
        raise illegal_access()

    model.handles.append(model.unet.register_forward_pre_hook(fault))
    message = await finished(await atelier.imagine("a red fox --seed 42", count=1), 60)
    # built again: a new worker, with a new model that the fault does not touch
    assert atelier.bot.executor.worker is not broken
    assert [w.state for w in atelier.bot.executor.workers()] == ["ready"]
    assert (pixels(message.attachment_bytes()) == pixels(expected.attachment_bytes())).all()
    [job] = rows(atelier, "SELECT status FROM jobs WHERE id = ?", job_id_of(message))
    assert job["status"] == "done"


async def test_a_job_that_breaks_the_gpu_twice_fails_and_the_others_go_on(
        atelier: Atelier, monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.engine.worker import Worker

    call = Worker._call
    workers: set[int] = set()

    def faulty(self: Worker, loaded: Any, slots: list[Any], *rest: Any) -> Any:
        if any(request.prompt == "crash" for request, _ in slots):
            workers.add(id(self))
            raise illegal_access()
        return call(self, loaded, slots, *rest)

    monkeypatch.setattr(Worker, "_call", faulty)  # every worker built from now on, too
    failed = await finished(await atelier.imagine("crash", count=1), 90)
    assert "Failed — The worker running this job was lost 2 times" in failed.content
    assert len(workers) == 2  # tried once more, on a worker built again
    fine = await finished(await atelier.imagine("a calm lake", count=1), 60)
    assert fine.attachments
