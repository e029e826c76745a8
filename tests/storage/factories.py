"""Rows for repository tests."""

from __future__ import annotations

import itertools
from typing import Any

from storage import JobRecord, new_job_id

_clock = itertools.count(1_700_000_000)


def make_job(**fields: Any) -> JobRecord:
    """A queued `/imagine` job in server 1 by user 10; each call is one second newer."""
    values: dict[str, Any] = {
        "id": new_job_id(),
        "guild_id": 1,
        "channel_id": 100,
        "user_id": 10,
        "kind": "imagine",
        "prompt": "a red fox in the snow",
        "negative": "",
        "model": "tiny",
        "sampler": "euler",
        "width": 128,
        "height": 128,
        "steps": 30,
        "guidance": 7.0,
        "seed": 42,
        "count": 4,
        "created_at": float(next(_clock)),
    }
    values.update(fields)
    return JobRecord(**values)
