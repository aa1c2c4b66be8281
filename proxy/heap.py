"""Keep the proxy's long-lived heap out of the cyclic garbage collector's full collections.

After start-up a proxy holds tens of thousands of long-lived objects (modules, compiled protobuf
descriptors, the config). CPython's full (generation 2) collection walks all of them every few seconds
under load, a pause of tens of milliseconds for every request in flight at that moment. ``gc.freeze()``
moves everything alive into a permanent generation the collector never walks; requests' own objects
are collected as before.

A frozen object is never collected, so a config change (xDS, a rotated certificate) thaws the heap:
what the change replaced may be garbage in reference cycles. Once changes have settled for ``settle``
seconds, one full collection runs and the heap is frozen again. A burst of changes costs one full
collection, not one per change.
"""

from __future__ import annotations

import asyncio
import gc


class HeapFreezer:
    def __init__(self, loop: asyncio.AbstractEventLoop, settle: float = 2.0) -> None:
        self.loop = loop
        self.settle = settle
        self.freezes = 0
        self._timer: asyncio.TimerHandle | None = None

    @property
    def frozen(self) -> bool:
        return gc.get_freeze_count() > 0

    @property
    def pending(self) -> bool:
        """A freeze is scheduled (changes have not settled yet)."""
        return self._timer is not None

    def freeze_now(self) -> None:
        """Collect what is garbage now, then freeze everything still alive."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        gc.collect()
        gc.freeze()
        self.freezes += 1

    def thaw(self) -> None:
        """The config changed: let the collector see the old heap again; freeze once changes settle."""
        gc.unfreeze()
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_later(self.settle, self.freeze_now)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        gc.unfreeze()
