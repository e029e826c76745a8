"""The per-person limit on public posts: a sliding window, one count per person."""

from __future__ import annotations

from bot.access import PostLimit


def test_a_person_gets_so_many_posts_in_any_window() -> None:
    posts = PostLimit(3, window=60.0)
    assert [posts.take(1, now=t) for t in (0.0, 10.0, 20.0, 30.0)] == [True, True, True, False]
    assert posts.take(2, now=30.0)  # someone else is not held back
    assert not posts.take(1, now=59.9)  # the first post is still inside the window
    assert posts.take(1, now=60.0)  # …and now it is not
    assert not posts.take(1, now=65.0)
    assert posts.take(1, now=70.0)


def test_refused_posts_do_not_count() -> None:
    posts = PostLimit(1, window=60.0)
    assert posts.take(1, now=0.0)
    for t in range(1, 60):
        assert not posts.take(1, now=float(t))
    assert posts.take(1, now=60.0)


def test_idle_people_are_forgotten() -> None:
    posts = PostLimit(1, window=60.0)
    for user in range(PostLimit.SWEEP_AT):
        assert posts.take(user, now=0.0)
    assert posts.take(PostLimit.SWEEP_AT, now=61.0)
    assert len(posts) == 1  # only the one who just posted is remembered
    assert posts.take(0, now=61.0)
