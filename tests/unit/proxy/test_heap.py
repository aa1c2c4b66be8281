"""proxy.heap: the start-up heap is frozen out of full collections; a config change thaws it, so what
the change replaced is collected, and the heap is frozen again once changes settle."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from proxy.heap import HeapFreezer


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


@pytest.fixture(autouse=True)
def _unfreeze():
    yield
    gc.unfreeze()


def test_frozen_objects_are_not_collected_until_a_change_thaws_them():
    async def go():
        loop = asyncio.get_running_loop()
        heap = HeapFreezer(loop, settle=0.05)
        old_config = Node()
        ref = weakref.ref(old_config)
        heap.freeze_now()
        assert heap.frozen and heap.freezes == 1
        del old_config  # replaced, but frozen: the collector does not look at it
        gc.collect()
        assert ref() is not None
        heap.thaw()  # the change that replaced it
        assert not heap.frozen
        for _ in range(200):  # until the settle timer froze again (waits on the state, not a guess)
            if heap.freezes == 2:
                break
            await asyncio.sleep(0.01)
        assert heap.freezes == 2 and heap.frozen
        assert ref() is None  # collected in the collection before the new freeze
        heap.close()
        assert not heap.frozen

    asyncio.run(go())


def test_a_burst_of_changes_costs_one_collection():
    async def go():
        heap = HeapFreezer(asyncio.get_running_loop(), settle=0.05)
        heap.freeze_now()
        for _ in range(5):
            heap.thaw()
            await asyncio.sleep(0)
        for _ in range(200):
            if heap.freezes > 1:
                break
            await asyncio.sleep(0.01)
        assert heap.freezes == 2 and not heap.pending  # one timer for the burst, and none left
        heap.close()

    asyncio.run(go())
