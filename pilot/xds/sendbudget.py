"""A byte budget for responses being written to proxies, shared by every stream of the server.

gRPC serializes a response into its own buffer when the stream's generator yields it and keeps that
buffer until the bytes are written; a push to 2000 proxies whose reads are slower than pilot's writes
would otherwise hold 2000 serialized copies at once (~670 MiB at 1000 services). Like Istio, which
counts a push as done only once the send completed (and throttles pushes), a stream here waits for
room before yielding and gives it back when gRPC has taken the message. Waiters are served in order;
one response larger than the whole budget still goes when nothing else is in flight, so nothing waits
forever.
"""

from __future__ import annotations

import asyncio
from collections import deque


class SendBudget:
    def __init__(self, limit_bytes: int) -> None:
        if limit_bytes < 1:
            raise ValueError("the send budget must be at least one byte")
        self.limit = limit_bytes
        self.used = 0
        self.peak = 0
        self._waiters: deque[tuple[int, asyncio.Future]] = deque()

    def _fits(self, size: int) -> bool:
        return self.used == 0 or self.used + size <= self.limit

    async def acquire(self, size: int) -> None:
        if not self._waiters and self._fits(size):
            self._take(size)
            return
        future = asyncio.get_running_loop().create_future()
        entry = (size, future)
        self._waiters.append(entry)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(size)  # granted, then cancelled before use
            else:
                self._waiters.remove(entry)
                self._grant()
            raise

    def release(self, size: int) -> None:
        self.used = max(0, self.used - size)
        self._grant()

    def _take(self, size: int) -> None:
        self.used += size
        self.peak = max(self.peak, self.used)

    def _grant(self) -> None:
        while self._waiters and self._fits(self._waiters[0][0]):
            size, future = self._waiters.popleft()
            if not future.done():
                self._take(size)
                future.set_result(None)
