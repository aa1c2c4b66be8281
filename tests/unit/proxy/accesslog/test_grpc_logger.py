"""gRPC access logger with a fake AccessLogService client: entries, peer metadata, batching on one
stream, the bound and drops, and reconnecting after a failure."""

from __future__ import annotations

import asyncio

from envoy.config.core.v3 import base_pb2
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2

from proxy.accesslog.grpc import HTTP, AlsStats, GrpcAccessLogger, GrpcLogSink
from proxy.accesslog.grpc_entries import encode_peer_metadata, http_entry, tcp_entry
from proxy.core.headers import Headers
from proxy.core.stream_info import StreamInfo
from proxy.stats.store import Store


class FakeCall:
    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.messages = []

    def done(self):
        return False

    async def write(self, msg):
        if self.fail:
            raise ConnectionError("down")
        # The sink writes serialized StreamAccessLogsMessages, as they go on the wire.
        self.messages.append(als_pb2.StreamAccessLogsMessage.FromString(msg))

    def cancel(self):
        pass


class FakeClient:
    def __init__(self) -> None:
        self.calls: list[FakeCall] = []
        self.down = False

    def stub(self, cls):
        return self

    def StreamAccessLogs(self, metadata=None):
        call = FakeCall(self.down)
        self.calls.append(call)
        return call


def info(code=200, flags=(), path="/p", peer=None) -> StreamInfo:
    h = Headers([(":method", "GET"), (":path", path), (":authority", "reviews:9080"), (":scheme", "http")])
    if peer:
        h.add("x-envoy-peer-metadata", encode_peer_metadata(peer))
    si = StreamInfo(downstream_remote_address=("10.0.0.1", 5555), request_headers=h)
    si.response_code = code
    si.response_flags = set(flags)
    si.upstream_host = "10.0.0.2:9080"
    si.upstream_cluster = "reviews"
    si.bytes_sent = 7
    si.finish()
    return si


def sink(client, **kw):
    store = Store()
    node = base_pb2.Node(id="sidecar~1", cluster="reviews")
    return GrpcLogSink(HTTP, "als", client, node, AlsStats(store), **kw), store


def test_http_entry_fields_and_flags():
    e = http_entry(info(429, {"RL", "UAEX"}))
    c = e.common_properties
    assert e.response.response_code.value == 429 and e.request.request_method == 1 and e.request.path == "/p"
    assert c.response_flags.rate_limited and c.response_flags.unauthorized_details.reason == 1
    assert c.upstream_remote_address.socket_address.port_value == 9080 and c.upstream_cluster == "reviews"
    t = tcp_entry(info())
    assert t.connection_properties.sent_bytes == 7


def test_logger_adds_istio_labels_from_node_and_peer_header():
    client = FakeClient()
    s, _ = sink(client)
    logger = GrpcAccessLogger("x", HTTP, s, ctx=None)
    logger._local = {
        "workload": "reviews-v2",
        "namespace": "default",
        "app": "reviews",
        "version": "v2",
        "service_account": "sa",
        "principal": "",
    }
    logger._inbound = True
    logger.log(
        info(peer={"WORKLOAD_NAME": "productpage-v1", "LABELS": {"app": "productpage", "version": "v1"}})
    )
    (encode, si), _ = s._pending[0]  # buffered as the request; the entry is built in the flush
    entry = accesslog_pb2.HTTPAccessLogEntry.FromString(encode(si))
    md = entry.common_properties.metadata.filter_metadata["isthmus"]
    assert md["reporter"] == "destination"
    assert md["source"]["workload"] == "productpage-v1" and md["source"]["version"] == "v1"
    assert md["destination"]["workload"] == "reviews-v2"
    assert md["destination_service"] == "reviews"


def test_batches_go_over_one_stream_with_the_identifier_first():
    client = FakeClient()

    async def go():
        s, store = sink(client, flush_interval=0.01)
        for i in range(5):
            s.add(http_entry(info(path=f"/{i}")))
        await s.flush_once()
        s.add(http_entry(info(path="/5")))
        await s.flush_once()
        return store

    store = asyncio.run(go())
    assert len(client.calls) == 1
    first, second = client.calls[0].messages
    assert first.identifier.log_name == "als" and first.identifier.node.id == "sidecar~1"
    assert not second.HasField("identifier")
    assert [e.request.path for e in first.http_logs.log_entry] == [f"/{i}" for i in range(5)]
    assert store.counter("access_logs.grpc_access_log.logs_written").value == 6


def test_bound_drops_and_failed_batch_is_kept_for_the_next_stream():
    client = FakeClient()
    client.down = True

    async def go():
        s, store = sink(client, buffer_size=64)  # bound: 8 KiB
        s.max_pending = 3 * http_entry(info()).ByteSize()
        for _ in range(5):
            s.add(http_entry(info()))
        assert store.counter("access_logs.grpc_access_log.logs_dropped").value == 2
        assert not await s.flush_once()  # the service is down: kept
        assert len(s._pending) == 3
        client.down = False
        while s._pending:
            assert await s.flush_once()
        return store

    store = asyncio.run(go())
    assert len(client.calls) == 2  # a new stream after the failure, with the identifier again
    assert client.calls[1].messages[0].identifier.log_name == "als"
    assert store.counter("access_logs.grpc_access_log.logs_written").value == 3


def test_log_never_awaits_and_starts_the_sender_lazily():
    client = FakeClient()

    async def go():
        s, store = sink(client, flush_interval=0.01)
        s.add(http_entry(info()))  # a plain call: no await on the request path
        for _ in range(100):
            if store.counter("access_logs.grpc_access_log.logs_written").value:
                break
            await asyncio.sleep(0.01)
        await s.close()
        return store

    assert asyncio.run(go()).counter("access_logs.grpc_access_log.logs_written").value == 1


class SlowCall(FakeCall):
    """A write that takes a while (flow control, a busy service): the proxy keeps logging meanwhile."""

    def __init__(self) -> None:
        super().__init__(False)
        self.writing = asyncio.Event()

    async def write(self, msg):
        self.writing.set()
        await asyncio.sleep(0.02)
        await super().write(msg)


def test_a_full_buffer_sends_full_batches_and_the_rest_waits_for_the_interval():
    """Envoy's rule: flush at buffer_size_bytes or at the interval. Entries that arrive while a write
    is in flight are not sent on their own right after it (a stream of tiny messages costs a gRPC
    write each); they go when the buffer fills again or the interval is due."""
    client = FakeClient()
    call = SlowCall()
    client.StreamAccessLogs = lambda metadata=None: call
    raw = http_entry(info()).SerializeToString()

    async def go():
        s, _ = sink(client, flush_interval=1.0, buffer_size=4 * len(raw))
        for _ in range(4):
            s.add(raw)  # full: the sender wakes up
        await asyncio.wait_for(call.writing.wait(), 5)
        s.add(raw)  # arrives during the write
        for _ in range(500):
            if call.messages:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # a sender that sent whatever is pending would have written again by now
        after_full = [len(m.http_logs.log_entry) for m in call.messages]
        for _ in range(1000):
            if len(call.messages) == 2:
                break
            await asyncio.sleep(0.01)
        await s.close()
        return after_full, [len(m.http_logs.log_entry) for m in call.messages]

    after_full, final = asyncio.run(go())
    assert after_full == [4]
    assert final == [4, 1]  # the straggler went at the interval
