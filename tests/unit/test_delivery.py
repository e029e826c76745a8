"""Progress edits are coalesced, never lost: the newest state is always shown."""

from __future__ import annotations

import asyncio

import pytest

from bot import delivery
from bot.delivery import Delivery, Render
from storage import JobRecord

JOB = JobRecord(id="k3f9x2ab", guild_id=1, channel_id=2, user_id=3, kind="imagine",
                prompt="a fox", negative="", model="tiny", sampler="euler", width=128,
                height=128, steps=30, guidance=7.0, seed=1, count=4, created_at=0.0)


class Recording(Delivery):
    """A delivery whose edits take a while and are only recorded."""

    def __init__(self) -> None:
        super().__init__(bot=None, job=JOB)  # type: ignore[arg-type]
        self.shown: list[str] = []

    async def _show(self, render: Render) -> int | None:
        self._last_edit = asyncio.get_running_loop().time()
        await asyncio.sleep(0.05)
        self.shown.append(render.content)
        return 1

    async def _delivered(self, message_id: int | None) -> None:
        pass  # no database here


async def test_an_update_during_an_edit_is_shown_after_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(delivery, "PROGRESS_INTERVAL", 0.01)
    shows = Recording()
    shows.update(Render("Queued — position 3"))
    await asyncio.sleep(0.02)  # the first edit is under way
    shows.update(Render("Queued — position 2"))
    await asyncio.sleep(0.3)
    assert shows.shown == ["Queued — position 3", "Queued — position 2"]


async def test_only_the_newest_of_quick_updates_is_shown_and_final_wins(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(delivery, "PROGRESS_INTERVAL", 0.2)
    shows = Recording()
    shows.update(Render("step 1/30"))
    await asyncio.sleep(0.1)
    for step in range(2, 10):
        shows.update(Render(f"step {step}/30"))
    await asyncio.sleep(0.4)
    assert shows.shown == ["step 1/30", "step 9/30"]
    await shows.finish(Render("done"))
    shows.update(Render("step 30/30"))  # too late: the final state stays
    await asyncio.sleep(0.3)
    assert shows.shown[-1] == "done"
