"""The agent's status port (Istio's 15021/15020): readiness and what the agent knows about its proxy.

* ``GET /healthz/ready``: 200 when the proxy process runs and its admin ``/ready`` says LIVE, else 503
  (Kubernetes' readiness probe and ``isthmus up`` wait on this);
* ``GET /status``: JSON: supervisor state, proxy PID, starts and restarts, certificate version and expiry;
* ``GET /stats/prometheus``: the same as Prometheus counters and gauges (``isthmus_agent_*``).

``route()`` is pure (given the facts, which response); ``StatusServer`` is the asyncio I/O around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger("proxy.agent.status")

REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


@dataclass(frozen=True)
class Response:
    status: int
    body: str
    content_type: str = "text/plain; charset=utf-8"


def prometheus_text(status: dict) -> str:
    lines = [
        "# TYPE isthmus_agent_proxy_starts_total counter",
        f"isthmus_agent_proxy_starts_total {status.get('starts', 0)}",
        "# TYPE isthmus_agent_proxy_restarts_total counter",
        f"isthmus_agent_proxy_restarts_total {status.get('restarts', 0)}",
        "# TYPE isthmus_agent_proxy_running gauge",
        f"isthmus_agent_proxy_running {1 if status.get('proxy_pid') else 0}",
    ]
    if status.get("cert_not_after") is not None:
        lines += [
            "# TYPE isthmus_agent_cert_expiry_seconds gauge",
            f"isthmus_agent_cert_expiry_seconds {status['cert_not_after']}",
        ]
    return "\n".join(lines) + "\n"


def route(method: str, path: str, ready: bool, status: dict) -> Response:
    path = path.split("?", 1)[0]
    if method not in ("GET", "HEAD"):
        return Response(405, "method not allowed\n")
    if path == "/healthz/ready":
        if ready:
            return Response(200, "")
        return Response(503, f"proxy not ready (agent state {status.get('state')})\n")
    if path == "/status":
        return Response(200, json.dumps(status, sort_keys=True) + "\n", "application/json")
    if path == "/stats/prometheus":
        return Response(200, prometheus_text(status), "text/plain; version=0.0.4")
    return Response(404, "not found: try /healthz/ready, /status, /stats/prometheus\n")


class StatusServer:
    def __init__(
        self,
        host: str,
        port: int,
        ready: Callable[[], Awaitable[bool]],
        status: Callable[[], dict],
    ) -> None:
        self.host, self.port = host, port
        self._ready, self._status = ready, status
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port, reuse_address=True)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                line = await reader.readline()
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
            parts = line.decode("latin-1").split()
            if len(parts) < 2:
                response = Response(400, "bad request\n")
            else:
                ready = await self._ready() if parts[1].startswith("/healthz/ready") else False
                response = route(parts[0], parts[1], ready, self._status())
            body = b"" if parts and parts[0] == "HEAD" else response.body.encode()
            writer.write(
                f"HTTP/1.1 {response.status} {REASONS.get(response.status, 'Bad Request')}\r\n"
                f"content-type: {response.content_type}\r\ncontent-length: {len(response.body.encode())}\r\n"
                "connection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(OSError):
                writer.close()
