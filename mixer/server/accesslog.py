"""``envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs``: telemetry reports.

The first message of a stream names the reporting proxy (``identifier.node``); later messages may omit
it. Every HTTP and TCP entry becomes a Report (mixer.telemetry.attributes), counted in Istio's metrics,
in the dashboard's traffic store and, when configured, written as a JSON line. The work per entry is
in memory only, so a stream is drained as fast as it arrives.
"""

from __future__ import annotations

import logging

from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc

from isthmus.log import event
from mixer.telemetry.attributes import Workload, http_report, node_workload, tcp_report

log = logging.getLogger("mixer.telemetry")


class AccessLogService(als_pb2_grpc.AccessLogServiceServicer):
    def __init__(self, sink, metrics) -> None:
        self.sink = sink  # callable(Report)
        self.metrics = metrics

    async def StreamAccessLogs(self, request_iterator, context):  # noqa: N802 (gRPC's naming)
        node = Workload()
        node_id = ""
        self.metrics.als_streams.inc()
        entries = 0
        try:
            async for message in request_iterator:
                if message.HasField("identifier"):
                    node = node_workload(message.identifier.node)
                    node_id = message.identifier.node.id
                for entry in message.http_logs.log_entry:
                    self.sink(http_report(node, entry))
                for entry in message.tcp_logs.log_entry:
                    self.sink(tcp_report(node, entry))
                entries += len(message.http_logs.log_entry) + len(message.tcp_logs.log_entry)
        finally:
            self.metrics.als_streams.dec()
            event(log, logging.DEBUG, "accesslog.stream_closed", node=node_id or "-", entries=entries)
        return als_pb2.StreamAccessLogsResponse()
