"""`SD_COMPILE=1` on the tiny model: after the warm-up no request the bot makes compiles again,
and LoRAs switch on a compiled model without recompiling, giving the pictures of an uncompiled one.

The graphs are traced with torch.compile's `eager` backend: the same modules compiled the same
way, the same graphs and guards, without Inductor's code generation (minutes on a CPU)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from bot.engine.models import describe
from bot.engine.types import GenerationRequest, GenerationResult, Mode
from bot.engine.worker import Worker, WorkerConfig
from tests.engine.helpers import difference, make_request
from tests.models import ModelFiles

MAX_BATCH = 4


def worker_for(model_files: ModelFiles, compile: bool) -> Worker:
    return Worker(WorkerConfig(models=(describe("tiny", "tiny"),), device="cpu",
                               cache_dir=str(model_files.tiny.parent), max_batch=MAX_BATCH,
                               lora_dir=str(model_files.loras), compile=compile,
                               compile_backend="eager"))


@pytest.fixture(scope="module")
def compiled(model_files: ModelFiles) -> Iterator[Worker]:
    """A worker with the tiny model compiled and warmed up."""
    worker = worker_for(model_files, compile=True)
    worker.model("tiny")
    yield worker


@pytest.fixture(scope="module")
def eager(model_files: ModelFiles) -> Worker:
    return worker_for(model_files, compile=False)


def graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def run(worker: Worker, *requests: GenerationRequest) -> dict[str, GenerationResult]:
    outcomes = worker.run(list(requests))
    for outcome in outcomes.values():
        assert isinstance(outcome, GenerationResult), outcome
    return outcomes  # type: ignore[return-value]


def png(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (180, 60, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


LONG = " ".join(["lighthouse", "harbour", "gulls", "stormy"] * 6)


def varied() -> list[list[GenerationRequest]]:
    """Batches as the bot makes them, none of them the warm-up's own."""
    return [
        [make_request("grid", seeds=(10, 11, 12, 13), width=168, height=96)],  # --ar 16:9
        [make_request("tall", seeds=(14, 15), width=96, height=168, sampler="dpm++_2m_karras")],
        [make_request("wide", seeds=(16,), width=200, height=88, steps=3, sampler="ddim")],
        [make_request("a", seeds=(1, 2), user_key="u1"),  # two users' jobs in one call
         make_request("b", seeds=(3,), user_key="u2", prompt="a blue whale")],
        [make_request("turbo", seeds=(4,), guidance=0.0, steps=3, sampler="euler_a")],
        [make_request("lcm", seeds=(5, 6, 7), guidance=1.0, steps=4, sampler="lcm")],
        [make_request("long", seeds=(8, 9), prompt=LONG, sampler="unipc", width=144,
                      height=112)],
        [make_request("upload", seeds=(20, 21), mode=Mode.IMG2IMG, init_image=png((300, 150)),
                      strength=0.6, width=184, height=88)],
        [make_request("upscale", seeds=(22,), mode=Mode.IMG2IMG, init_image=png((128, 128)),
                      strength=0.3, width=256, height=256)],
        [make_request("zoom", seeds=(23, 24, 25, 26), mode=Mode.INPAINT,
                      init_image=png((64, 64)), box="32,32,64,64")],
        [make_request("pan", seeds=(27,), mode=Mode.INPAINT, init_image=png((128, 128)),
                      box="0,0,128,128", width=192, height=128, sampler="dpm++_sde")],
    ]


def test_no_request_the_bot_makes_compiles_after_the_warm_up(compiled: Worker) -> None:
    assert graphs() > 0  # the warm-up compiled the UNet and the decoder
    before = graphs()
    for batch in varied():
        results = run(compiled, *batch)
        for request in batch:
            sizes = {(image.width, image.height) for image in results[request.job_id].images}
            assert sizes == {(request.width, request.height)}
    assert graphs() == before, "a request compiled a new graph"


def test_compiled_pictures_are_the_uncompiled_ones(compiled: Worker, eager: Worker) -> None:
    for request in (make_request("one", seeds=(30, 31), width=168, height=96),
                    make_request("two", seeds=(32,), guidance=0.0, sampler="dpm++_2m")):
        ours, theirs = run(compiled, request), run(eager, request)
        for a, b in zip(ours[request.job_id].images, theirs[request.job_id].images, strict=True):
            assert difference(a, b) <= 1


@pytest.mark.parametrize("loras", [
    (("detail", 0.8),),
    (("style", 1.0),),
    (("detail", 0.5), ("style", -0.7)),
    (),
    (("detail", 0.8),),  # back again: the weights are the ones before the other merges
    (("detail", 0.0),),  # weight 0: exactly the model's own pictures
])
def test_loras_switch_on_a_compiled_model_without_recompiling(
        compiled: Worker, eager: Worker, loras: tuple[tuple[str, float], ...]) -> None:
    before = graphs()
    tags = " ".join(f"<lora:{name}:{weight}>" for name, weight in loras)
    request = make_request("lora", seeds=(40, 41), prompt=f"a red fox {tags}", loras=loras)
    ours = run(compiled, request)["lora"]
    theirs = run(eager, request)["lora"]
    plain = run(eager, make_request("plain", seeds=(40, 41)))["plain"]
    assert graphs() == before
    for a, b, own in zip(ours.images, theirs.images, plain.images, strict=True):
        assert difference(a, b) <= 2  # merged into the weights vs added as layers: rounding
        changes = any(weight for _, weight in loras)
        assert (difference(a, own) > 8) == changes


def test_a_lora_that_does_not_fit_leaves_the_compiled_model_as_it_was(
        compiled: Worker, eager: Worker) -> None:
    before = graphs()
    bad = make_request("bad", prompt="a fox <lora:xl-detail>", loras=(("xl-detail", 1.0),))
    outcome: Any = compiled.run([bad])["bad"]
    assert "does not fit model `tiny`" in str(outcome)
    ours = run(compiled, make_request("after", seeds=(50,)))["after"]
    theirs = run(eager, make_request("after", seeds=(50,)))["after"]
    assert difference(ours.images[0], theirs.images[0]) <= 1
    assert graphs() == before
