"""The push queue: FIFO, coalescing while waiting, and while in flight (one push per proxy)."""

import asyncio

from pilot.model.config import ConfigKey
from pilot.xds.debounce import config_push, endpoint_push
from pilot.xds.pushqueue import PushQueue

A = ConfigKey("VirtualService", "default", "a")
B = ConfigKey("VirtualService", "default", "b")


def test_fifo_and_coalescing_while_waiting():
    q = PushQueue()
    q.enqueue("p1", config_push([A], 0))
    q.enqueue("p2", config_push([A], 0))
    q.enqueue("p1", config_push([B], 1))
    assert len(q) == 2
    key, request = q.pop()
    assert key == "p1" and request.config_keys == {A, B} and request.count == 2
    assert q.pop()[0] == "p2"
    assert q.pop() is None


def test_one_push_in_flight_per_proxy_and_requests_meanwhile_are_kept():
    q = PushQueue()
    q.enqueue("p1", endpoint_push(["h1"], 0))
    key, _ = q.pop()
    q.enqueue("p1", endpoint_push(["h2"], 1))
    q.enqueue("p1", config_push([A], 2))
    assert q.pop() is None  # p1 is still being pushed: nothing for another worker
    q.mark_done("p1")
    key, request = q.pop()
    assert key == "p1" and request.full and request.eds_hosts == {"h2"} and request.count == 2


def test_done_without_news_leaves_the_queue_empty_and_remove_forgets():
    q = PushQueue()
    q.enqueue("p1", config_push([A], 0))
    q.pop()
    q.mark_done("p1")
    assert q.pop() is None and q.in_flight == 0
    q.enqueue("p2", config_push([A], 0))
    q.remove("p2")
    assert q.pop() is None


async def test_workers_wait_and_close_releases_them():
    q = PushQueue()
    got = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    q.enqueue("p1", config_push([A], 0))
    assert (await asyncio.wait_for(got, 1))[0] == "p1"
    waiting = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    q.close()
    assert await asyncio.wait_for(waiting, 1) is None
