"""``envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs``: telemetry reports.

The first message of a stream names the reporting proxy (``identifier.node``); later messages may omit
it. Messages are read as mixer.telemetry.alsview (Envoy's message, HTTP entries lean). The entries are
not ingested message by message: each message's batch is queued with its node, and the queue is handed
to the sink (server.app.Telemetry) at most ``flush_delay_s`` after its first message, at
``max_pending`` messages, and whenever a stream ends (before its response: a finished stream's entries
are counted when the call returns). The proxies send a message every few tens of milliseconds each;
ingesting them one at a time ran mixer's code cold every time (measured on the running process: ~3x its
warm cost per entry), ingesting the queue runs it once, warm, with the batches of one node
aggregated together (mixer.telemetry.ingest: Istio's label series, summed per series before they are
counted in Istio's metrics and the dashboard's store, and, when configured, one JSON line per entry).
The work is in memory only, so a stream is drained as fast as it arrives.
"""

from __future__ import annotations

import asyncio
import logging
from itertools import chain

import grpc
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc

from isthmus.log import event
from mixer.telemetry.alsview import StreamAccessLogsView
from mixer.telemetry.attributes import Workload, node_workload

log = logging.getLogger("mixer.telemetry")

FLUSH_DELAY_S = 0.2  # the proxies buffer up to 1 s themselves (Envoy's buffer_flush_interval)
MAX_PENDING = 64  # messages (~16 KiB each from a proxy under load)


class AccessLogService(als_pb2_grpc.AccessLogServiceServicer):
    def __init__(self, sink, metrics, flush_delay_s: float = FLUSH_DELAY_S, max_pending: int = MAX_PENDING):
        self.sink = sink  # .http(node, entries), .tcp(node, entries): one batch each (server.app.Telemetry)
        self.metrics = metrics
        self.flush_delay_s = flush_delay_s
        self.max_pending = max_pending
        self._pending: list[tuple[Workload, object, object]] = []  # (node, http entries, tcp entries)
        self._timer: asyncio.TimerHandle | None = None

    async def StreamAccessLogs(self, request_iterator, context):  # noqa: N802 (gRPC's naming)
        node = Workload()
        node_id = ""
        self.metrics.als_streams.inc()
        entries = 0
        messages = self.metrics.als_messages
        pending = self._pending
        try:
            async for message in request_iterator:
                messages.inc()
                if message.HasField("identifier"):
                    node = node_workload(message.identifier.node)
                    node_id = message.identifier.node.id
                http_logs = message.http_logs.log_entry
                tcp_logs = message.tcp_logs.log_entry
                if not http_logs and not tcp_logs:
                    continue
                entries += len(http_logs) + len(tcp_logs)
                pending.append((node, http_logs, tcp_logs))
                if len(pending) >= self.max_pending:
                    self.flush()
                elif self._timer is None:
                    self._timer = asyncio.get_running_loop().call_later(self.flush_delay_s, self.flush)
        finally:
            self.flush()
            self.metrics.als_streams.dec()
            event(log, logging.DEBUG, "accesslog.stream_closed", node=node_id or "-", entries=entries)
        return als_pb2.StreamAccessLogsResponse()

    def flush(self) -> None:
        """Hand every queued batch to the sink, the batches of one node (one stream, mostly) together, in
        the order they came."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending = self._pending
        if not pending:
            return
        per_node: dict[int, tuple[Workload, list, list]] = {}
        for node, http, tcp in pending:
            group = per_node.get(id(node))  # a stream's Workload lives as long as its queued batches
            if group is None:
                group = per_node[id(node)] = (node, [], [])
            if http:
                group[1].append(http)
            if tcp:
                group[2].append(tcp)
        pending.clear()  # the same list object: streams append to it
        for node, http, tcp in per_node.values():
            for kind, sink, parts in (("http", self.sink.http, http), ("tcp", self.sink.tcp, tcp)):
                if not parts:
                    continue
                try:
                    sink(node, parts[0] if len(parts) == 1 else chain.from_iterable(parts))
                except Exception as e:  # noqa: BLE001 (one bad batch must not lose the others)
                    event(log, logging.ERROR, "accesslog.ingest_failed", kind=kind, error=repr(e))


def add_to_server(service: AccessLogService, server) -> None:
    """Serve ``service`` as Envoy's AccessLogService, each message read as ``alsview`` (the same bytes;
    HTTP entries keep only what the labels and values are made of, see mixer.telemetry.alsview)."""
    name = als_pb2.DESCRIPTOR.services_by_name["AccessLogService"].full_name
    handler = grpc.stream_unary_rpc_method_handler(
        service.StreamAccessLogs,
        request_deserializer=StreamAccessLogsView.FromString,
        response_serializer=als_pb2.StreamAccessLogsResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(name, {"StreamAccessLogs": handler}),)
    )
