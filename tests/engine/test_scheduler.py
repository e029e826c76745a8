"""`FairQueue`: users take turns, compatible requests share a pipeline call."""

from __future__ import annotations

from dataclasses import replace

from bot.engine.scheduler import FairQueue
from bot.engine.types import GenerationRequest, Mode


def request(job_id: str, user: str, count: int = 1, **fields: object) -> GenerationRequest:
    base = GenerationRequest(job_id=job_id, user_key=user, model="tiny", prompt="a cat",
                             negative="", width=128, height=128, steps=30, guidance=7.0,
                             sampler="euler", seeds=tuple(range(count)))
    return replace(base, **fields)  # type: ignore[arg-type]


def drain(queue: FairQueue, max_images: int = 1) -> list[list[str]]:
    batches = []
    while queue:
        batches.append([r.job_id for r in queue.pop_batch(max_images)])
    return batches


def test_empty_queue() -> None:
    queue = FairQueue()
    assert not queue and len(queue) == 0
    assert queue.pop_batch(8) == [] and queue.positions() == {}
    assert queue.remove("nope") is None


def test_users_take_turns() -> None:
    queue = FairQueue()
    for i in range(5):
        queue.push(request(f"a{i}", "alice"))
    queue.push(request("b0", "bob"))
    assert len(queue) == 6
    # bob's single job is served second, not sixth
    assert queue.positions() == {"a0": 1, "b0": 2, "a1": 3, "a2": 4, "a3": 5, "a4": 6}
    assert drain(queue) == [["a0"], ["b0"], ["a1"], ["a2"], ["a3"], ["a4"]]


def test_three_users_rotate() -> None:
    queue = FairQueue()
    for job_id, user in [("a0", "a"), ("a1", "a"), ("a2", "a"), ("b0", "b"), ("b1", "b"),
                         ("c0", "c")]:
        queue.push(request(job_id, user))
    assert drain(queue) == [["a0"], ["b0"], ["c0"], ["a1"], ["b1"], ["a2"]]


def test_a_newcomer_goes_ahead_of_a_user_just_served() -> None:
    # The usual case: the worker takes alice's first job at once, then bob arrives.
    queue = FairQueue()
    for i in range(5):
        queue.push(request(f"a{i}", "alice"))
    assert queue.pop_batch(1)[0].job_id == "a0"
    queue.push(request("b0", "bob"))
    assert queue.positions() == {"b0": 1, "a1": 2, "a2": 3, "a3": 4, "a4": 5}
    assert drain(queue) == [["b0"], ["a1"], ["a2"], ["a3"], ["a4"]]


def test_users_rejoin_in_order_of_when_they_were_last_served() -> None:
    queue = FairQueue()
    queue.push(request("a0", "alice"))
    queue.push(request("b0", "bob"))
    assert drain(queue) == [["a0"], ["b0"]]  # alice served before bob
    queue.push(request("b1", "bob"))
    queue.push(request("a1", "alice"))  # comes back later, but waited longer
    queue.push(request("c0", "carol"))  # never served: first
    assert [r.job_id for r in queue] == ["c0", "a1", "b1"]
    queue.push(request("c1", "carol"))
    assert drain(queue) == [["c0"], ["a1"], ["b1"], ["c1"]]


def test_batching_merges_equal_keys_up_to_max_images() -> None:
    queue = FairQueue()
    queue.push(request("a0", "alice", count=4))
    queue.push(request("b0", "bob", count=2))
    queue.push(request("c0", "carol", count=2, steps=20))  # different key
    queue.push(request("d0", "dave", count=4))  # would exceed 8 images
    queue.push(request("e0", "erin", count=2))  # fits
    batch = queue.pop_batch(8)
    assert [r.job_id for r in batch] == ["a0", "b0", "e0"]
    assert sum(r.count for r in batch) == 8
    assert [r.job_id for r in queue] == ["c0", "d0"]


def test_batch_key_covers_everything_a_call_shares() -> None:
    base = request("x", "u", count=2)
    differing = [
        {"model": "other"}, {"width": 136}, {"height": 136}, {"steps": 31},
        {"guidance": 7.5}, {"sampler": "ddim"},
        {"mode": Mode.IMG2IMG, "init_image": b"png", "strength": 0.5},
        {"mode": Mode.INPAINT, "init_image": b"png", "strength": 0.5},
    ]
    for fields in differing:
        assert replace(base, **fields).batch_key() != base.batch_key(), fields  # type: ignore[arg-type]
    same = replace(base, job_id="y", user_key="v", prompt="a dog", negative="blur", seeds=(9,))
    assert same.batch_key() == base.batch_key()
    # each edit has its own picture, place and mask, and can still share a call
    edit = replace(base, mode=Mode.INPAINT, init_image=b"png", strength=1.0, box="0,0,64,64")
    other_edit = replace(edit, init_image=b"other", box=None, mask=b"mask")
    assert edit.batch_key() == other_edit.batch_key()


def test_incompatible_requests_are_not_merged() -> None:
    queue = FairQueue()
    queue.push(request("a0", "alice", steps=10))
    queue.push(request("b0", "bob", steps=20))
    queue.push(request("c0", "carol", mode=Mode.IMG2IMG, init_image=b"png", strength=0.5))
    queue.push(request("d0", "dave", steps=10))
    assert drain(queue, max_images=8) == [["a0", "d0"], ["b0"], ["c0"]]


def test_a_request_larger_than_max_images_still_runs_alone() -> None:
    queue = FairQueue()
    queue.push(request("a0", "alice", count=4))
    queue.push(request("b0", "bob", count=1))
    assert drain(queue, max_images=2) == [["a0"], ["b0"]]


def test_positions_follow_serving_order() -> None:
    queue = FairQueue()
    for job_id, user in [("a0", "a"), ("a1", "a"), ("b0", "b"), ("c0", "c"), ("c1", "c")]:
        queue.push(request(job_id, user))
    assert queue.positions() == {"a0": 1, "b0": 2, "c0": 3, "a1": 4, "c1": 5}
    assert [r.job_id for r in queue] == ["a0", "b0", "c0", "a1", "c1"]


def test_remove() -> None:
    queue = FairQueue()
    for job_id, user in [("a0", "a"), ("a1", "a"), ("b0", "b")]:
        queue.push(request(job_id, user))
    removed = queue.remove("a0")
    assert removed is not None and removed.job_id == "a0"
    assert queue.remove("a0") is None
    assert queue.positions() == {"a1": 1, "b0": 2}
    assert queue.remove("b0") is not None  # bob's last job: bob leaves the rotation
    assert queue.remove("a1") is not None
    assert not queue and len(queue) == 0 and list(queue) == []


def test_push_front_goes_first() -> None:
    queue = FairQueue()
    queue.push(request("a0", "alice"))
    queue.push(request("b0", "bob"))
    queue.push(request("b1", "bob"))
    queue.push(request("b-retry", "bob"), front=True)
    assert queue.positions() == {"b-retry": 1, "a0": 2, "b0": 3, "b1": 4}
    assert drain(queue) == [["b-retry"], ["a0"], ["b0"], ["b1"]]
