"""A watch on the event loop: how late it wakes up, and a debug line when it stalls."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

log = logging.getLogger(__name__)


class LoopWatch:
    """Sleeps `interval` seconds over and over; waking up later than that is loop lag."""

    def __init__(self, interval: float = 0.05, threshold: float = 0.1) -> None:
        self.interval = interval
        self.threshold = threshold
        self.max_lag = 0.0
        self.recent: deque[float] = deque(maxlen=1200)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch(), name="loop-watch")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def reset(self) -> None:
        self.max_lag = 0.0
        self.recent.clear()

    async def _watch(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.interval)
            lag = max(0.0, time.perf_counter() - before - self.interval)
            self.recent.append(lag)
            self.max_lag = max(self.max_lag, lag)
            if lag > self.threshold:
                log.debug("event loop stalled for %.0f ms", lag * 1000)
