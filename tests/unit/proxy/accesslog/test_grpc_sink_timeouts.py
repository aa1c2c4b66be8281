"""The sender's waits (asyncio.timeout, no Task per wait): a write to a service that stopped reading
gives up after WRITE_TIMEOUT and keeps the batch for a new stream; the flush interval still fires;
close() stops a sender blocked in a write or waiting for its interval."""

from __future__ import annotations

import asyncio

import pytest

from proxy.accesslog import grpc as grpc_module
from tests.unit.proxy.accesslog.test_grpc_logger import FakeCall, FakeClient, http_entry, info, sink


class StuckCall(FakeCall):
    """A service that stopped reading: the write never completes."""

    def __init__(self) -> None:
        super().__init__(False)
        self.cancelled = False

    async def write(self, msg):
        await asyncio.Event().wait()

    def cancel(self):
        self.cancelled = True


def test_a_stuck_write_times_out_and_the_batch_goes_on_the_next_stream(monkeypatch):
    monkeypatch.setattr(grpc_module, "WRITE_TIMEOUT", 0.05)
    client = FakeClient()
    stuck = StuckCall()
    calls = [stuck]
    client.StreamAccessLogs = lambda metadata=None: (
        calls.pop(0) if calls else FakeClient.StreamAccessLogs(client)
    )

    async def go():
        s, store = sink(client)
        for _ in range(3):
            s.add(http_entry(info()))
        assert not await s.flush_once()  # timed out: kept, the stream dropped
        assert stuck.cancelled and len(s._pending) == 3 and s._call is None
        assert await s.flush_once()  # a new stream takes the batch
        return store

    store = asyncio.run(go())
    assert [len(m.http_logs.log_entry) for m in client.calls[0].messages] == [3]
    assert client.calls[0].messages[0].identifier.log_name == "als"
    assert store.counter("access_logs.grpc_access_log.logs_written").value == 3


@pytest.mark.parametrize("stuck", [False, True])
def test_close_stops_a_sender_waiting_for_its_interval_or_in_a_write(stuck):
    client = FakeClient()
    call = StuckCall() if stuck else FakeCall(False)
    client.StreamAccessLogs = lambda metadata=None: call

    async def go():
        s, store = sink(client, flush_interval=0.02 if stuck else 60.0)
        s.add(http_entry(info()))
        await asyncio.sleep(0.1)  # the sender is now in its write (stuck) or waiting for the interval
        task = s._task
        await asyncio.wait_for(s.close(), 5)
        assert task.done() and s._task is None
        return s, store

    s, store = asyncio.run(go())
    assert len(s._pending) == 1  # never sent: the stuck write's batch was put back; or not due yet
    assert store.counter("access_logs.grpc_access_log.logs_written").value == 0


def test_the_interval_flush_still_fires():
    client = FakeClient()

    async def go():
        s, store = sink(client, flush_interval=0.02)
        s.add(http_entry(info()))
        for _ in range(300):
            if store.counter("access_logs.grpc_access_log.logs_written").value:
                break
            await asyncio.sleep(0.01)
        await s.close()
        return store

    assert asyncio.run(go()).counter("access_logs.grpc_access_log.logs_written").value == 1
