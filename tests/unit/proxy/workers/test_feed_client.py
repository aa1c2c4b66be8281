"""A worker applies the main's batches one at a time, in order, and answers each (ACK or error)."""

from __future__ import annotations

import asyncio

from proxy.workers import protocol
from proxy.workers.worker import FeedClient
from proxy.xds import api


class _Initialized:
    done = False


class FakeHandler:
    def __init__(self, type_url: str, log: list, fail: bool = False, slow: float = 0.0) -> None:
        self.type_url = type_url
        self.wildcard = type_url in (api.CLUSTER, api.LISTENER)
        self.log = log
        self.fail = fail
        self.slow = slow
        self.initialized = _Initialized()
        self.timeouts = 0

    async def on_update(self, update: api.ResourceUpdate) -> None:
        self.log.append(("start", update.type_url, update.version_info))
        await asyncio.sleep(self.slow)
        self.log.append(("end", update.type_url, update.version_info))
        if self.fail:
            raise api.UpdateRejected({"x": "bad"})

    def on_fetch_timeout(self) -> None:
        self.timeouts += 1


def test_batches_apply_strictly_in_order_and_are_answered():
    async def run():
        sent: list[bytes] = []
        log: list = []
        feed = FeedClient(sent.append)
        feed.register(FakeHandler(api.LISTENER, log, slow=0.05))
        feed.register(FakeHandler(api.ROUTE, log, fail=True))
        feed.enqueue_update("n1", api.ResourceUpdate(api.LISTENER, "1", {}, delta=True))
        feed.enqueue_update("n2", api.ResourceUpdate(api.ROUTE, "2", {}, delta=True))
        feed.enqueue_update("n3", api.ResourceUpdate(api.SECRET, "3", {}, delta=True))  # nobody: ACK
        await feed.start()
        while len(sent) < 3:
            await asyncio.sleep(0.01)
        await feed.stop()
        return log, [protocol.decode_ack(p) for k, p in protocol.FrameReader().feed(b"".join(sent))]

    log, acks = asyncio.run(run())
    # The slow LDS batch finishes before RDS starts (RDS names routes LDS just subscribed).
    assert log == [
        ("start", api.LISTENER, "1"),
        ("end", api.LISTENER, "1"),
        ("start", api.ROUTE, "2"),
        ("end", api.ROUTE, "2"),
    ]
    assert acks[0] == ("n1", None)
    assert acks[1][0] == "n2" and "bad" in acks[1][1]
    assert acks[2] == ("n3", None)


def test_fetch_timeout_only_for_a_handler_not_yet_initialized():
    async def run():
        feed = FeedClient(lambda data: None)
        waiting, done = FakeHandler(api.CLUSTER, []), FakeHandler(api.LISTENER, [])
        done.initialized.done = True
        feed.register(waiting)
        feed.register(done)
        feed.enqueue_fetch_timeout(api.CLUSTER)
        feed.enqueue_fetch_timeout(api.LISTENER)
        await feed.start()
        await asyncio.sleep(0.05)
        await feed.stop()
        return waiting.timeouts, done.timeouts

    assert asyncio.run(run()) == (1, 0)
