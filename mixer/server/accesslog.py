"""``envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs``: telemetry reports.

The first message of a stream names the reporting proxy (``identifier.node``); later messages may omit
it. Messages are read as mixer.telemetry.alsview (Envoy's message, HTTP entries lean). Each message's
batch of HTTP or TCP entries goes to the sink whole (server.app.Telemetry):
mixer.telemetry.ingest turns it into Istio's label series and aggregates it per series before it is
counted in Istio's metrics and the dashboard's traffic store (and, when configured, written as JSON
lines, one per entry). The work is in memory only, so a stream is drained as fast as it arrives.
"""

from __future__ import annotations

import logging

import grpc
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc

from isthmus.log import event
from mixer.telemetry.alsview import StreamAccessLogsView
from mixer.telemetry.attributes import Workload, node_workload

log = logging.getLogger("mixer.telemetry")


class AccessLogService(als_pb2_grpc.AccessLogServiceServicer):
    def __init__(self, sink, metrics) -> None:
        self.sink = sink  # .http(node, entries), .tcp(node, entries): one batch each (server.app.Telemetry)
        self.metrics = metrics

    async def StreamAccessLogs(self, request_iterator, context):  # noqa: N802 (gRPC's naming)
        node = Workload()
        node_id = ""
        self.metrics.als_streams.inc()
        entries = 0
        messages = self.metrics.als_messages
        try:
            async for message in request_iterator:
                messages.inc()
                if message.HasField("identifier"):
                    node = node_workload(message.identifier.node)
                    node_id = message.identifier.node.id
                http_logs = message.http_logs.log_entry
                if http_logs:
                    self.sink.http(node, http_logs)
                tcp_logs = message.tcp_logs.log_entry
                if tcp_logs:
                    self.sink.tcp(node, tcp_logs)
                entries += len(http_logs) + len(tcp_logs)
        finally:
            self.metrics.als_streams.dec()
            event(log, logging.DEBUG, "accesslog.stream_closed", node=node_id or "-", entries=entries)
        return als_pb2.StreamAccessLogsResponse()


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
