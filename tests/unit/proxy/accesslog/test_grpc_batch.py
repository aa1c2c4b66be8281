"""The flush's batch: ``batch_message`` (one join of the entries and their field heads) against the
previous per-entry concatenation and protobuf's own message as oracles, and ``GrpcLogSink._take_batch``
(selection and encoding in one pass) against the previous two-pass version."""

from __future__ import annotations

import collections
import random

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2

from proxy.accesslog.grpc import HTTP, INITIAL_ENTRY_ESTIMATE, AlsStats, GrpcLogSink
from proxy.accesslog.grpc_wire import (
    T_HTTP_LOGS,
    T_IDENTIFIER,
    T_LOG_ENTRY,
    T_TCP_LOGS,
    batch_message,
    varint,
)
from proxy.stats.store import Store


def reference_batch_message(kind_http: bool, entries: list[bytes], identifier: bytes = b"") -> bytes:
    """The previous batch_message: each entry framed by a concatenation, the body copied into its field."""

    def field(tag, payload):
        return tag + varint(len(payload)) + payload

    body = b"".join([T_LOG_ENTRY + varint(len(e)) + e for e in entries])
    head = field(T_IDENTIFIER, identifier) if identifier else b""
    return head + field(T_HTTP_LOGS if kind_http else T_TCP_LOGS, body)


def entry(rnd: random.Random, size_hint: int) -> bytes:
    e = accesslog_pb2.HTTPAccessLogEntry()
    e.request.path = "/" + "p" * max(0, size_hint)
    e.response.response_body_bytes = rnd.randrange(1, 2**40)
    return e.SerializeToString()


SIZES = [
    0,
    1,
    100,
    118,
    119,
    120,
    121,
    122,
    123,
    124,
    125,
    126,
    4080,
    4085,
    4086,
    4087,
    4088,
    4090,
    5000,
    20000,
]


@pytest.mark.parametrize("kind_http", [True, False])
@pytest.mark.parametrize("with_identifier", [False, True])
def test_batch_bytes_are_the_previous_bytes_and_protobufs_message(kind_http, with_identifier):
    rnd = random.Random(f"{kind_http}{with_identifier}")
    ident = b""
    if with_identifier:
        ident = als_pb2.StreamAccessLogsMessage.Identifier(
            log_name="als", node=base_pb2.Node(id="n")
        ).SerializeToString()
    for _ in range(60):
        entries = [entry(rnd, rnd.choice(SIZES)) for _ in range(rnd.choice([0, 1, 2, 27, 100]))]
        lengths = {len(e) for e in entries}
        raw = batch_message(kind_http, entries, ident)
        assert raw == reference_batch_message(kind_http, entries, ident), lengths
        if kind_http:  # protobuf's own message of the same entries, field for field and byte for byte
            msg = als_pb2.StreamAccessLogsMessage()
            if ident:
                msg.identifier.ParseFromString(ident)
            msg.http_logs.SetInParent()
            for e in entries:
                msg.http_logs.log_entry.append(accesslog_pb2.HTTPAccessLogEntry.FromString(e))
            assert als_pb2.StreamAccessLogsMessage.FromString(raw) == msg
            assert raw == msg.SerializeToString()


def test_every_entry_length_around_the_varint_boundaries():
    for n in list(range(0, 300)) + list(range(4000, 4200)) + [16383, 16384, 2**21]:
        e = b"x" * n
        assert batch_message(True, [e, e]) == reference_batch_message(True, [e, e])


def reference_take_batch(sink: GrpcLogSink) -> list:
    """The previous _take_batch: select by buffered sizes, then encode."""
    batch, size = [], 0
    pending = sink._pending
    while pending and (not batch or size + pending[0][1] <= sink.buffer_size * 4):
        item, n = pending.popleft()
        batch.append((item, n))
        size += n
    sink._pending_bytes -= size
    out, encoded, encoded_bytes = [], 0, 0
    for item, n in batch:
        if type(item) is tuple:
            encode, si = item
            try:
                raw = encode(si)
            except Exception:
                sink.stats.logs_dropped.inc()
                continue
            n = len(raw)
            encoded += 1
            encoded_bytes += n
            item = raw
        out.append((item, n))
    if encoded:
        sink._estimate = max(64, encoded_bytes // encoded)
    return out


def encode(si):
    if si < 0:
        raise ValueError("a logging bug")
    return b"e" * si


def sinks(buffer_size: int) -> tuple[GrpcLogSink, GrpcLogSink]:
    return tuple(
        GrpcLogSink(HTTP, "als", None, None, AlsStats(Store()), buffer_size=buffer_size) for _ in range(2)
    )


@pytest.mark.parametrize("seed", range(12))
def test_take_batch_is_the_two_pass_version(seed):
    """Random buffers of entry bytes and records (some failing to encode, the first one too), sizes
    from tiny to past the batch limit: the same batches, buffer, byte count, estimate and drops."""
    rnd = random.Random(seed)
    new, old = sinks(rnd.choice([64, 1000, 16384]))
    for _ in range(30):
        items = []
        for _ in range(rnd.randrange(0, 60)):
            kind = rnd.random()
            if kind < 0.3:
                raw = b"r" * rnd.randrange(1, 3000)
                items.append((raw, len(raw)))
            else:
                si = -1 if kind > 0.9 else rnd.randrange(0, 5000)
                items.append(((encode, si), rnd.choice([INITIAL_ENTRY_ESTIMATE, rnd.randrange(64, 70000)])))
        for sink in (new, old):
            sink._pending.extend(items)
            sink._pending_bytes += sum(n for _, n in items)
        for _ in range(rnd.randrange(1, 4)):
            assert new._take_batch() == reference_take_batch(old)
            assert list(new._pending) == list(old._pending)
            assert new._pending_bytes == old._pending_bytes
            assert new._estimate == old._estimate
            assert new.stats.logs_dropped.value == old.stats.logs_dropped.value
    assert isinstance(new._pending, collections.deque)
