"""``envoy.access_loggers.http_grpc`` and ``envoy.access_loggers.tcp_grpc``: access logs streamed to
an access log service (mixer) over ``envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs``.

Off the request path, as Envoy's gRPC access loggers:

* ``log(stream_info)`` only appends ``(logger, stream_info)`` to the logger's buffer: O(1), no
  protobuf, no network, no awaiting. The StreamInfo is final when it is logged (the HCM and tcp_proxy
  log once, at the end), so the entry is built later, in the flush. Past the bound (64 times
  ``buffer_size_bytes``: 1 MiB by default, at least 8 KiB; a buffered request counts as the average
  size of the entries encoded so far) entries are dropped and counted
  (``access_logs.grpc_access_log.logs_dropped``).
* A background task encodes the buffered requests into ``HTTPAccessLogEntry`` (``TCPAccessLogEntry``)
  wire bytes (``grpc_wire``: the parts that repeat, such as Istio's labels, are encoded once) and
  sends them as one ``StreamAccessLogsMessage`` every ``buffer_flush_interval`` (default 1 s), or at
  once when it holds ``buffer_size_bytes`` (default 16 KiB), over ONE long-lived stream; the first
  message carries ``identifier{node, log_name}``. Sent entries are counted (``logs_written``). A
  broken stream is re-opened with back-off; the batch that failed stays at the head of the buffer.
* Each entry carries Istio's labels for both sides in
  ``common_properties.metadata.filter_metadata["isthmus"]`` (docs/mixer.md).

Loggers with the same service, log name and kind share one buffer and stream (Envoy shares by config),
so a listener update does not open a second stream.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random

import grpc
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.extensions.access_loggers.grpc.v3 import als_pb2
from envoy.service.accesslog.v3 import als_pb2 as service_pb2
from google.protobuf import json_format

from proxy.accesslog.grpc_entries import (
    DOWNSTREAM_PEER,
    EMPTY_WORKLOAD,
    METADATA_NAMESPACE,
    PEER_METADATA_HEADER,
    UPSTREAM_PEER,
    PeerMetadataDecoder,
    destination_service,
    istio_metadata,
    ssl_info,
    workload_from_node_metadata,
)
from proxy.accesslog.grpc_wire import EntryEncoder, HttpEntryWriter, batch_message, metadata_field
from proxy.config.context import FactoryContext
from proxy.config.errors import ConfigError
from proxy.config.registry import ACCESS_LOGGERS
from proxy.config.supported import reject_unsupported
from proxy.grpc.service import GrpcClusterClient, NoHostError, check_cluster_exists, parse_grpc_service

log = logging.getLogger("proxy.accesslog.grpc")

DEFAULT_FLUSH_INTERVAL = 1.0
DEFAULT_BUFFER_SIZE = 16 * 1024
MIN_PENDING_BOUND = 8 * 1024
BACKOFF_BASE = 0.25
BACKOFF_MAX = 10.0
WRITE_TIMEOUT = 10.0

COMMON_SPEC = {
    "log_name": True,
    "grpc_service": True,  # parse_grpc_service
    "transport_api_version": True,
    "buffer_flush_interval": True,
    "buffer_size_bytes": True,
}
HTTP_SPEC = {
    "common_config": COMMON_SPEC,
    "additional_request_headers_to_log": True,
    "additional_response_headers_to_log": True,
}
TCP_SPEC = {"common_config": COMMON_SPEC}

HTTP, TCP = "http", "tcp"
INITIAL_ENTRY_ESTIMATE = 512  # bytes a buffered request counts for until entries have been encoded
METHOD = "/envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs"


class RawAlsStub:
    """StreamAccessLogs taking already-serialized ``StreamAccessLogsMessage`` bytes (the sink writes
    the wire format itself; the service sees the ordinary messages)."""

    def __init__(self, channel) -> None:
        self.StreamAccessLogs = channel.stream_stream(
            METHOD,
            request_serializer=None,
            response_deserializer=service_pb2.StreamAccessLogsResponse.FromString,
        )


class AlsStats:
    __slots__ = ("logs_written", "logs_dropped")

    def __init__(self, store) -> None:
        scope = store.scope("access_logs.grpc_access_log.")
        self.logs_written = scope.counter("logs_written")
        self.logs_dropped = scope.counter("logs_dropped")


class GrpcLogSink:
    """One buffer and one StreamAccessLogs stream. ``add(entry)`` never waits."""

    def __init__(
        self,
        kind: str,
        log_name: str,
        client,
        node,
        stats: AlsStats,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        metadata=None,
    ) -> None:
        self.kind = kind
        self.log_name = log_name
        self.client = client
        self.node = node
        self.stats = stats
        self.flush_interval = flush_interval
        self.buffer_size = buffer_size
        self.max_pending = max(MIN_PENDING_BOUND, 64 * buffer_size)
        self.metadata = metadata
        # (item, size): item is an entry's bytes, or a (logger, stream_info) record encoded at flush.
        self._pending: collections.deque = collections.deque()
        self._pending_bytes = 0
        self._estimate = INITIAL_ENTRY_ESTIMATE
        self._identifier: bytes | None = None
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._call = None
        self.failures = 0

    # ---- request path

    def add(self, entry) -> None:
        """Buffer an entry already built (a protobuf message or its serialized bytes)."""
        raw = entry if isinstance(entry, bytes) else entry.SerializeToString()
        self._append(raw, len(raw))

    def add_record(self, encode, si) -> None:
        """Buffer a finished request; ``encode(si)`` builds its entry in the flush. The request path:
        ``_append`` written out (one call less per request)."""
        size = self._estimate
        if self._pending_bytes + size > self.max_pending:
            self.stats.logs_dropped.inc()
            return
        self._pending.append(((encode, si), size))
        self._pending_bytes += size
        if self._task is None:
            self._start()
        if self._pending_bytes >= self.buffer_size and self._wakeup is not None:
            self._wakeup.set()

    def _append(self, item, size: int) -> None:
        if self._pending_bytes + size > self.max_pending:
            self.stats.logs_dropped.inc()
            return
        self._pending.append((item, size))
        self._pending_bytes += size
        if self._task is None:
            self._start()
        if self._pending_bytes >= self.buffer_size and self._wakeup is not None:
            self._wakeup.set()

    def _start(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (tools): entries wait until one runs
        self._wakeup = asyncio.Event()
        self._task = loop.create_task(self._run(), name=f"als:{self.log_name}")

    # ---- background

    def _take_batch(self) -> list:
        """The next batch as (entry bytes, size): up to 4 x ``buffer_size`` by the buffered sizes (at
        least one item); buffered requests are encoded here, in the same pass."""
        pending = self._pending
        popleft = pending.popleft
        limit = self.buffer_size * 4
        out = []
        size = taken = encoded = encoded_bytes = 0
        while pending and (not taken or size + pending[0][1] <= limit):
            item, n = popleft()
            size += n
            taken += 1
            if type(item) is tuple:
                try:
                    raw = item[0](item[1])
                except Exception:  # a logging bug must never stop the sender
                    log.exception("gRPC access log %s: could not encode an entry", self.log_name)
                    self.stats.logs_dropped.inc()
                    continue
                n = len(raw)
                encoded += 1
                encoded_bytes += n
                item = raw
            out.append((item, n))
        self._pending_bytes -= size
        if encoded:
            self._estimate = max(64, encoded_bytes // encoded)
        return out

    def _put_back(self, batch: list) -> None:
        for item in reversed(batch):
            self._pending.appendleft(item)
            self._pending_bytes += item[1]

    def _message(self, batch: list, first: bool) -> bytes:
        """The serialized StreamAccessLogsMessage for ``batch``; the first of a stream identifies us."""
        identifier = b""
        if first:
            if self._identifier is None:
                ident = service_pb2.StreamAccessLogsMessage.Identifier(log_name=self.log_name)
                if self.node is not None:
                    ident.node.CopyFrom(self.node)
                self._identifier = ident.SerializeToString()
            identifier = self._identifier
        return batch_message(self.kind == HTTP, [e for e, _ in batch], identifier)

    async def _run(self) -> None:
        """Envoy's flush rule: send when the buffer holds ``buffer_size`` bytes, or when the flush
        interval is due. A wake-up for a full buffer sends full batches only: what arrived while a
        write was in flight waits for the buffer to fill again or for the interval (each gRPC write
        costs the proxy hundreds of µs of CPU; sending whatever is pending after every write turned a
        steady load into a stream of one- or two-entry messages)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.flush_interval
        while True:
            timeout = deadline - loop.time()
            if timeout > 0:
                try:  # asyncio.timeout: a timer on this task (wait_for would make a Task per wait)
                    async with asyncio.timeout(timeout):
                        await self._wakeup.wait()
                except TimeoutError:
                    pass
            self._wakeup.clear()
            # Due: the batches that hold what is buffered now (a batch takes up to 4 x buffer_size);
            # what arrives during those writes waits like the rest.
            due = 0
            if loop.time() >= deadline:
                deadline = loop.time() + self.flush_interval
                due = -(-self._pending_bytes // (4 * self.buffer_size))
            while self._pending and (due > 0 or self._pending_bytes >= self.buffer_size):
                due -= 1
                if not await self.flush_once():
                    await asyncio.sleep(self._backoff())
                    break

    def _backoff(self) -> float:
        delay = min(BACKOFF_MAX, BACKOFF_BASE * (2 ** min(self.failures - 1, 10)))
        return delay * (0.5 + random.random() / 2)

    async def flush_once(self) -> bool:
        """Send one batch; False (batch kept) when the stream failed."""
        batch = self._take_batch()
        if not batch:
            return True
        first = self._call is None
        try:
            if not first and self._call.done():  # the service ended the stream (it went away)
                raise ConnectionError("the access log stream ended")
            if first:
                stub = self.client.stub(RawAlsStub)
                self._call = stub.StreamAccessLogs(metadata=self.metadata)
            # A write waits for HTTP/2 flow control; a service that stopped reading must not hold
            # the sender forever.
            async with asyncio.timeout(WRITE_TIMEOUT):
                await self._call.write(self._message(batch, first))
        except asyncio.CancelledError:
            self._put_back(batch)
            raise
        except (grpc.aio.AioRpcError, NoHostError, asyncio.InvalidStateError, grpc.aio.UsageError) as e:
            self._fail(batch, e)
            return False
        except Exception as e:  # a closed channel and friends: reconnect all the same
            self._fail(batch, e)
            return False
        self.failures = 0
        self.stats.logs_written.inc(len(batch))
        return True

    def _fail(self, batch: list, err: BaseException) -> None:
        self.failures += 1
        if self.failures == 1:
            log.warning(
                "access log service %s: stream failed (%s); retrying with back-off", self.log_name, err
            )
        call, self._call = self._call, None
        if call is not None:
            call.cancel()
        self._put_back(batch)
        # A batch put back may push the buffer past its bound while the service is down: shed the
        # oldest entries beyond it, counted.
        while self._pending_bytes > self.max_pending and self._pending:
            _, n = self._pending.popleft()
            self._pending_bytes -= n
            self.stats.logs_dropped.inc()

    async def close(self) -> None:
        task = self._task
        if task is not None:
            # Python 3.11's wait_for swallows a cancellation that lands as the awaited write completes
            # (fixed in 3.12): cancel again until the sender has really stopped.
            while not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=0.5)
            if not task.cancelled():
                task.exception()  # retrieved: a sender that died of a bug is not reported twice
            self._task = None
        if self._call is not None:
            try:
                await self._call.done_writing()
            except Exception:
                pass
            self._call = None


_SINKS: dict[tuple, GrpcLogSink] = {}


class GrpcAccessLogger:
    """``log(stream_info)`` for the HCM and tcp_proxy (the AccessLogger contract)."""

    __slots__ = (
        "name",
        "filter",
        "sink",
        "kind",
        "req_headers",
        "resp_headers",
        "ctx",
        "_local",
        "_inbound",
        "_peers",
        "_encoder",
        "_labels",
        "_writer",
        "_flush_encode",
    )

    def __init__(self, name: str, kind: str, sink: GrpcLogSink, ctx, req_headers=(), resp_headers=()) -> None:
        self.name = name
        self.kind = kind
        self.sink = sink
        self.filter = None
        self.ctx = ctx
        self.req_headers = tuple(req_headers)
        self.resp_headers = tuple(resp_headers)
        self._local: dict[str, str] | None = None
        self._inbound: bool | None = None
        self._peers = PeerMetadataDecoder()
        self._encoder = EntryEncoder()
        # Istio's labels as encoded Metadata bytes, by (peer, destination service, TLS facts).
        self._labels: dict[tuple, tuple] = {}
        # HTTP: the flush's encoder, made at the first flush (the listener's direction is known then).
        self._writer: HttpEntryWriter | None = None
        # What a buffered request is encoded with: the writer's encode once it exists.
        self._flush_encode = self.encode

    def _facts(self) -> tuple[dict[str, str], bool]:
        if self._local is None:
            self._local = local_workload(self.ctx)
        if self._inbound is None:
            self._inbound = listener_is_inbound(self.ctx)
        return self._local, self._inbound

    def log(self, si) -> None:
        """The request path: filter, then buffer the finished request (encoded in the flush)."""
        try:
            if self.filter is not None and not self.filter(si):
                return
            # GrpcLogSink.add_record written out: this runs once per request.
            sink = self.sink
            size = sink._estimate
            pending = sink._pending_bytes + size
            if pending > sink.max_pending:
                sink.stats.logs_dropped.inc()
                return
            sink._pending.append(((self._flush_encode, si), size))
            sink._pending_bytes = pending
            if sink._task is None:
                sink._start()
            if pending >= sink.buffer_size and sink._wakeup is not None:
                sink._wakeup.set()
        except Exception:  # a logging bug must never fail a request
            log.exception("gRPC access log %s failed", self.name)

    def entry(self, si):
        """The entry as a protobuf message (what ``encode`` writes; for tests and tools)."""
        cls = accesslog_pb2.HTTPAccessLogEntry if self.kind == HTTP else accesslog_pb2.TCPAccessLogEntry
        return cls.FromString(self.encode(si))

    def encode(self, si) -> bytes:
        """One entry's wire bytes, with Istio's labels (docs/mixer.md)."""
        if self.kind == HTTP:
            writer = self._writer
            if writer is None:
                local, inbound = self._facts()
                writer = self._writer = HttpEntryWriter(
                    inbound, self._writer_labels, self.req_headers, self.resp_headers
                )
                self._flush_encode = writer.encode
            return writer.encode(si)
        return self.encode_parts(si)

    def encode_parts(self, si) -> bytes:
        """``encode`` made part by part (``EntryEncoder``): the reference the writer is tested against,
        and the TCP entries' encoder."""
        local, inbound = self._facts()
        md = self._metadata(si, local, inbound)
        if self.kind == HTTP:
            return self._encoder.http(si, md, self.req_headers, self.resp_headers)
        return self._encoder.tcp(si, md)

    def _writer_labels(self, si, found, header) -> bytes:
        """The writer's labels miss: Istio's label Struct for ``si`` as the metadata field."""
        local, inbound = self._facts()
        peer = EMPTY_WORKLOAD if found is not None else self._peers.decode(header)
        struct = istio_metadata(si, local, inbound, peer, destination_service(si))
        return metadata_field(METADATA_NAMESPACE, struct.SerializeToString(deterministic=True))

    def _metadata(self, si, local: dict[str, str], inbound: bool) -> bytes:
        """Istio's labels for ``si``, encoded once per peer, destination service and TLS facts."""
        state = si.filter_state
        found = state.get(DOWNSTREAM_PEER if inbound else UPSTREAM_PEER) if state else None
        header = None
        if isinstance(found, dict):
            peer_key = id(found)  # the dict is kept alive by the cache entry, checked by identity
        else:
            found = None
            if self.kind == HTTP:
                headers = si.request_headers if inbound else si.response_headers
                header = headers.get(PEER_METADATA_HEADER) if headers is not None else None
            peer_key = header or ""
        tls = None
        if inbound:
            info = ssl_info(si.downstream_ssl)
            if info is not None:
                tls = (
                    tuple(getattr(info, "peer_uri_sans", ()) or ()),
                    tuple(getattr(info, "local_uri_sans", ()) or ()),
                    getattr(info, "peer_certificate_presented", None),
                )
        key = (peer_key, destination_service(si), tls)
        hit = self._labels.get(key)
        if hit is not None and hit[0] is found:
            return hit[1]
        peer = self._peers.decode(header) if self.kind == HTTP else EMPTY_WORKLOAD
        struct = istio_metadata(si, local, inbound, peer, key[1])
        out = metadata_field(METADATA_NAMESPACE, struct.SerializeToString(deterministic=True))
        if len(self._labels) >= 4096:
            self._labels.clear()
        self._labels[key] = (found, out)
        return out


def _node(ctx):
    bootstrap = getattr(getattr(ctx, "server", None), "bootstrap", None)
    return bootstrap.node if bootstrap is not None else None


def local_workload(ctx) -> dict[str, str]:
    node = _node(ctx)
    if node is None or not node.HasField("metadata"):
        return dict(EMPTY_WORKLOAD)
    return workload_from_node_metadata(json_format.MessageToDict(node.metadata))


def listener_is_inbound(ctx) -> bool:
    """The listener's traffic_direction (INBOUND = 1); else Istio's naming (virtualInbound, inbound|…)."""
    name = getattr(ctx, "listener_name", "") or ""
    manager = getattr(getattr(ctx, "server", None), "listener_manager", None)
    if manager is not None:
        try:
            for listener in manager:
                if listener.name == name:
                    direction = listener.proto.traffic_direction
                    if direction:
                        return direction == 1
                    break
        except Exception:
            pass
    return "inbound" in name.lower()


def _build(kind: str, common, ctx: FactoryContext, path: str, spec_path: str) -> GrpcLogSink:
    cpath = f"{path}.common_config"
    if not common.log_name:
        raise ConfigError(f"{cpath}.log_name", "a gRPC access log needs a log_name")
    if common.transport_api_version not in (0, 2):
        raise ConfigError(f"{cpath}.transport_api_version", "only transport_api_version V3 is supported")
    if not common.HasField("grpc_service"):
        raise ConfigError(f"{cpath}.grpc_service", "a gRPC access log needs a grpc_service")
    service = parse_grpc_service(common.grpc_service, f"{cpath}.grpc_service")
    check_cluster_exists(ctx.cluster_manager, service.cluster_name, f"{cpath}.grpc_service")
    interval = DEFAULT_FLUSH_INTERVAL
    if common.HasField("buffer_flush_interval"):
        d = common.buffer_flush_interval
        interval = d.seconds + d.nanos / 1e9
        if interval <= 0:
            raise ConfigError(f"{cpath}.buffer_flush_interval", "must be greater than 0")
    size = common.buffer_size_bytes.value if common.HasField("buffer_size_bytes") else DEFAULT_BUFFER_SIZE
    key = (id(ctx.stats), kind, common.log_name, service, interval, size)
    sink = _SINKS.get(key)
    if sink is None:
        sink = _SINKS[key] = GrpcLogSink(
            kind,
            common.log_name,
            GrpcClusterClient(ctx.cluster_manager, service),
            _node(ctx),
            AlsStats(ctx.stats),
            interval,
            size,
            service.initial_metadata or None,
        )
    return sink


def _header_names(names, path: str) -> tuple[str, ...]:
    out = []
    for i, n in enumerate(names):
        if not n:
            raise ConfigError(f"{path}[{i}]", "a header name must not be empty")
        out.append(n.lower())
    return tuple(out)


@ACCESS_LOGGERS.register("envoy.access_loggers.http_grpc", als_pb2.HttpGrpcAccessLogConfig)
def make_http_grpc(
    config: als_pb2.HttpGrpcAccessLogConfig, ctx: FactoryContext, path: str
) -> GrpcAccessLogger:
    reject_unsupported(config, HTTP_SPEC, path)
    sink = _build(HTTP, config.common_config, ctx, path, "")
    return GrpcAccessLogger(
        "envoy.access_loggers.http_grpc",
        HTTP,
        sink,
        ctx,
        _header_names(config.additional_request_headers_to_log, f"{path}.additional_request_headers_to_log"),
        _header_names(
            config.additional_response_headers_to_log, f"{path}.additional_response_headers_to_log"
        ),
    )


@ACCESS_LOGGERS.register("envoy.access_loggers.tcp_grpc", als_pb2.TcpGrpcAccessLogConfig)
def make_tcp_grpc(config: als_pb2.TcpGrpcAccessLogConfig, ctx: FactoryContext, path: str) -> GrpcAccessLogger:
    reject_unsupported(config, TCP_SPEC, path)
    sink = _build(TCP, config.common_config, ctx, path, "")
    return GrpcAccessLogger("envoy.access_loggers.tcp_grpc", TCP, sink, ctx)
