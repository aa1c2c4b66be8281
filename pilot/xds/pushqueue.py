"""The push queue: at most one push in flight per proxy, and requests for it coalesce (Istio's
``pushqueue.go``).

``enqueue`` for a proxy that is already waiting merges into its waiting request; for a proxy whose
push is in flight the request is kept aside and re-queued by ``mark_done``. Order is first come, first
served. The bookkeeping is pure; ``get`` adds an asyncio wait for workers.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

from pilot.xds.debounce import PushRequest

K = TypeVar("K", bound=Hashable)


class PushQueue(Generic[K]):
    def __init__(self) -> None:
        self._pending: OrderedDict[K, PushRequest] = OrderedDict()
        self._in_flight: dict[K, PushRequest | None] = {}
        self._wakeup = asyncio.Event()  # binds to a loop only when awaited (3.10+)
        self._closed = False

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def enqueue(self, key: K, request: PushRequest) -> None:
        if key in self._in_flight:
            held = self._in_flight[key]
            self._in_flight[key] = request if held is None else held.merge(request)
        elif key in self._pending:
            self._pending[key] = self._pending[key].merge(request)
        else:
            self._pending[key] = request
            self._wake()

    def pop(self) -> tuple[K, PushRequest] | None:
        """The next proxy to push, now marked in flight (None when nothing waits)."""
        if not self._pending:
            return None
        key, request = self._pending.popitem(last=False)
        self._in_flight[key] = None
        return key, request

    def mark_done(self, key: K) -> None:
        """The push to `key` finished: a request that came meanwhile goes back in the queue."""
        held = self._in_flight.pop(key, None)
        if held is not None:
            self.enqueue(key, held)

    def remove(self, key: K) -> None:
        """The proxy disconnected: forget what it had waiting."""
        self._pending.pop(key, None)
        self._in_flight.pop(key, None)

    def close(self) -> None:
        self._closed = True
        self._wake()

    async def get(self) -> tuple[K, PushRequest] | None:
        """Wait for the next proxy to push; None once the queue is closed."""
        while True:
            if self._closed:
                return None
            item = self.pop()
            if item is not None:
                if self._pending:
                    self._wakeup.set()  # let another worker take the next one
                return item
            self._wakeup.clear()
            await self._wakeup.wait()

    def _wake(self) -> None:
        self._wakeup.set()
