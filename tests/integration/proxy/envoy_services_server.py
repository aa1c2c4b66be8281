"""A small real gRPC server with Envoy's ext_authz v3, rate limit v3 and access log service v3 APIs,
run as its own process by the mixer-extension integration tests (until mixer's server lands, and as
an independent check that the proxy speaks the standard APIs).

    python -m tests.integration.proxy.envoy_services_server --port P --record-dir DIR \
        [--deny-header end-user=evil] [--validity-ms N] [--use-count N] [--referenced a,b] \
        [--rate-limit N]

Everything it receives is appended as JSON lines to DIR: ``checks.jsonl`` (one per Check),
``ratelimits.jsonl`` (one per ShouldRateLimit), ``als.jsonl`` (one per log entry) and
``als_streams.jsonl`` (one per stream, with the identifier of its first message).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import grpc
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from google.protobuf import json_format
from google.rpc import code_pb2


class Recorder:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)

    def write(self, name: str, obj: dict) -> None:
        with open(self.dir / name, "a", encoding="utf-8") as f:
            f.write(json.dumps(obj) + "\n")


class Authz(external_auth_pb2_grpc.AuthorizationServicer):
    def __init__(self, args, rec: Recorder) -> None:
        self.args = args
        self.rec = rec
        self.deny = dict(h.split("=", 1) for h in args.deny_header)

    async def Check(self, request, context):
        http = request.attributes.request.http
        self.rec.write(
            "checks.jsonl",
            {
                "path": http.path,
                "method": http.method,
                "host": http.host,
                "source": request.attributes.source.address.socket_address.address,
                "principal": request.attributes.source.principal,
                "headers": dict(http.headers),
                "context_extensions": dict(request.attributes.context_extensions),
            },
        )
        resp = external_auth_pb2.CheckResponse()
        if self.args.validity_ms or self.args.use_count:
            md = {"valid_duration_ms": self.args.validity_ms, "valid_use_count": self.args.use_count}
            if self.args.referenced:
                md["referenced_attributes"] = self.args.referenced.split(",")
            resp.dynamic_metadata.update(md)
        denied = any(http.headers.get(k) == v for k, v in self.deny.items())
        if denied:
            resp.status.code = code_pb2.PERMISSION_DENIED
            resp.denied_response.status.code = 403
            resp.denied_response.body = "denied by policy"
            h = resp.denied_response.headers.add()
            h.header.key, h.header.value = "x-denied-by", "test-policy"
        else:
            resp.status.code = code_pb2.OK
            h = resp.ok_response.headers.add()
            h.header.key, h.header.value = "x-authz-checked", "yes"
        return resp


class RateLimit(rls_pb2_grpc.RateLimitServiceServicer):
    def __init__(self, args, rec: Recorder) -> None:
        self.limit = args.rate_limit
        self.rec = rec
        self.windows: dict[tuple, tuple[int, int]] = {}

    async def ShouldRateLimit(self, request, context):
        descriptors = [[(e.key, e.value) for e in d.entries] for d in request.descriptors]
        self.rec.write("ratelimits.jsonl", {"domain": request.domain, "descriptors": descriptors})
        now = int(time.time())
        over = False
        for d in descriptors:
            key = (request.domain, tuple(map(tuple, d)))
            second, count = self.windows.get(key, (now, 0))
            if second != now:
                second, count = now, 0
            count += 1
            self.windows[key] = (second, count)
            if self.limit and count > self.limit:
                over = True
        code = rls_pb2.RateLimitResponse.OVER_LIMIT if over else rls_pb2.RateLimitResponse.OK
        return rls_pb2.RateLimitResponse(overall_code=code)


class Als(als_pb2_grpc.AccessLogServiceServicer):
    def __init__(self, rec: Recorder) -> None:
        self.rec = rec

    async def StreamAccessLogs(self, request_iterator, context):
        first = True
        async for msg in request_iterator:
            if first:
                first = False
                self.rec.write(
                    "als_streams.jsonl",
                    {
                        "log_name": msg.identifier.log_name,
                        "node": json_format.MessageToDict(msg.identifier.node),
                    },
                )
            for e in msg.http_logs.log_entry:
                c = e.common_properties
                flags = [f.name for f, v in c.response_flags.ListFields()]
                self.rec.write(
                    "als.jsonl",
                    {
                        "kind": "http",
                        "code": e.response.response_code.value,
                        "path": e.request.path,
                        "flags": flags,
                        "isthmus": json_format.MessageToDict(c.metadata.filter_metadata["isthmus"]),
                    },
                )
            for e in msg.tcp_logs.log_entry:
                self.rec.write(
                    "als.jsonl",
                    {
                        "kind": "tcp",
                        "received": e.connection_properties.received_bytes,
                        "sent": e.connection_properties.sent_bytes,
                    },
                )
        return als_pb2.StreamAccessLogsResponse()


async def serve(args) -> None:
    rec = Recorder(Path(args.record_dir))
    server = grpc.aio.server()
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(Authz(args, rec), server)
    rls_pb2_grpc.add_RateLimitServiceServicer_to_server(RateLimit(args, rec), server)
    als_pb2_grpc.add_AccessLogServiceServicer_to_server(Als(rec), server)
    server.add_insecure_port(f"127.0.0.1:{args.port}")
    await server.start()
    await server.wait_for_termination()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--record-dir", required=True)
    p.add_argument("--deny-header", action="append", default=[])
    p.add_argument("--validity-ms", type=int, default=0)
    p.add_argument("--use-count", type=int, default=0)
    p.add_argument("--referenced", default="")
    p.add_argument("--rate-limit", type=int, default=0)
    asyncio.run(serve(p.parse_args()))


if __name__ == "__main__":
    main()
