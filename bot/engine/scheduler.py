"""Fair, batching order of queued requests: users take turns; compatible requests share a call."""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterator

from bot.engine.types import Work


class FairQueue:
    """Per-user FIFO queues served round-robin. Not thread-safe: only the executor touches it,
    on the event loop."""

    def __init__(self) -> None:
        self._queues: OrderedDict[str, deque[Work]] = OrderedDict()
        # When each user was last served (a turn counter), so that a user joining the rotation
        # goes ahead of those served since they were.
        self._served: dict[str, int] = {}
        self._turns = 0

    def __len__(self) -> int:
        return sum(len(queue) for queue in self._queues.values())

    def __bool__(self) -> bool:
        return bool(self._queues)

    def __iter__(self) -> Iterator[Work]:
        """Requests in the order they would be served: one from each user in turn."""
        queues = [list(queue) for queue in self._queues.values()]
        depth = max((len(queue) for queue in queues), default=0)
        for level in range(depth):
            for queue in queues:
                if level < len(queue):
                    yield queue[level]

    def push(self, request: Work, front: bool = False) -> None:
        """Queue `request` behind its user's others (or ahead of them, to retry lost work)."""
        queue = self._queues.get(request.user_key)
        if queue is None:
            queue = self._queues[request.user_key] = deque()
            self._join(request.user_key)
        if front:
            queue.appendleft(request)
            self._queues.move_to_end(request.user_key, last=False)
        else:
            queue.append(request)

    def _join(self, user: str) -> None:
        """Place a user new to the rotation ahead of everyone served more recently."""
        served = self._served.get(user, -1)
        for other in [u for u in self._queues if self._served.get(u, -1) > served]:
            self._queues.move_to_end(other)

    def remove(self, job_id: str) -> Work | None:
        for user, queue in self._queues.items():
            for request in queue:
                if request.job_id == job_id:
                    queue.remove(request)
                    if not queue:
                        del self._queues[user]
                    return request
        return None

    def positions(self) -> dict[str, int]:
        """1-based place of each queued job in the serving order."""
        return {request.job_id: place for place, request in enumerate(self, start=1)}

    def pop_batch(self, max_images: int) -> list[Work]:
        """The next request in turn, plus later ones it can share a pipeline call with.

        Users whose requests are taken go to the back of the rotation, so a user with many jobs
        never holds up one who has a single job waiting."""
        order = list(self)
        if not order:
            return []
        anchor = order[0]
        batch, images = [anchor], anchor.count
        for request in order[1:]:
            if images >= max_images:
                break
            if request.batch_key() == anchor.batch_key() and images + request.count <= max_images:
                batch.append(request)
                images += request.count
        self._turns += 1
        for request in batch:
            self._served[request.user_key] = self._turns
            queue = self._queues[request.user_key]
            queue.remove(request)
            if queue:
                self._queues.move_to_end(request.user_key)
            else:
                del self._queues[request.user_key]
        return batch
