"""The admin HTTP server (``bootstrap.admin.address``): a small HTTP/1.1 server on asyncio streams.

It never raises out of a connection: a malformed request gets 400, an oversized head 431, and the
connection is closed. Handlers are quick and synchronous (they read in-memory state), so the admin
answers promptly even while the proxy is busy. Its own traffic is counted under ``http.admin.``,
as in Envoy.

Entry points: ``AdminServer(server, host, port)`` with ``await start()`` / ``await stop()``, or
``await start_admin(server, address)`` with an ``envoy.config.core.v3.Address``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from email.utils import formatdate
from urllib.parse import parse_qsl, unquote

from proxy.admin.handlers import Response, dispatch

log = logging.getLogger("proxy.admin")

MAX_HEAD_BYTES = 60 * 1024
MAX_BODY_BYTES = 1024 * 1024
IDLE_TIMEOUT_S = 300.0
HEAD_TIMEOUT_S = 30.0

REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Payload Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class AdminServer:
    def __init__(self, server, host: str = "127.0.0.1", port: int = 0) -> None:
        self.server = server
        self.host = host
        self.port = port
        self._srv: asyncio.AbstractServer | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        stats = getattr(server, "stats", None)
        if stats is not None:
            scope = stats.scope("http.admin.")
            self._cx_total = scope.counter("downstream_cx_total")
            self._cx_active = scope.gauge("downstream_cx_active")
            self._rq_total = scope.counter("downstream_rq_total")
            self._rq_class = {c: scope.counter(f"downstream_rq_{c}xx") for c in range(1, 6)}
        else:
            self._cx_total = self._cx_active = self._rq_total = None
            self._rq_class = {}

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    async def start(self) -> None:
        self._srv = await asyncio.start_server(
            self._handle, self.host, self.port, reuse_address=True, limit=MAX_HEAD_BYTES + 1024
        )
        sock = self._srv.sockets[0]
        self.port = sock.getsockname()[1]

    async def stop(self) -> None:
        if self._srv is not None:
            self._srv.close()
            self._srv = None
        for w in list(self._conns):
            w.close()
        self._conns.clear()

    # --- connections ---------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conns.add(writer)
        if self._cx_total is not None:
            self._cx_total.inc()
            self._cx_active.inc()
        try:
            await self._serve(reader, writer)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:  # never let a connection bug escape into the loop's handler
            log.exception("admin connection failed")
        finally:
            if self._cx_active is not None:
                self._cx_active.dec()
            self._conns.discard(writer)
            try:
                writer.close()
            except Exception:  # noqa: BLE001 - the transport may already be gone
                pass

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = True
        while True:
            try:
                head = await asyncio.wait_for(
                    reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_S if first else IDLE_TIMEOUT_S
                )
            except asyncio.LimitOverrunError:
                await self._write(
                    writer, "HTTP/1.1", Response(431, "request headers too large\n"), False, False
                )
                return
            except asyncio.IncompleteReadError as e:
                if e.partial.strip():
                    await self._write(writer, "HTTP/1.1", Response(400, "incomplete request\n"), False, False)
                return
            first = False
            try:
                method, target, version, headers = parse_head(head)
                await read_body(reader, headers)
            except BadRequest as e:
                await self._write(writer, "HTTP/1.1", Response(e.status, str(e) + "\n"), False, False)
                return
            keep_alive = _keep_alive(version, headers)
            path, _, qs = target.partition("?")
            query = dict(parse_qsl(qs, keep_blank_values=True))
            path = unquote(path)
            collect = getattr(self.server, "collect_worker_stats", None)
            if collect is not None and path.startswith(("/stats", "/workers", "/clusters")):
                await collect()  # --concurrency N: the workers' numbers, fresh
            response = dispatch(self.server, method, path, query)
            await self._write(writer, version, response, keep_alive, method == "HEAD")
            if response.after is not None:
                try:
                    response.after()
                except Exception:
                    log.exception("admin %s: post-response action failed", path)
            if not keep_alive:
                return

    async def _write(
        self,
        writer: asyncio.StreamWriter,
        version: str,
        response: Response,
        keep_alive: bool,
        head_only: bool,
    ) -> None:
        if self._rq_total is not None:
            self._rq_total.inc()
            counter = self._rq_class.get(response.status // 100)
            if counter is not None:
                counter.inc()
        body = response.body.encode("utf-8") if isinstance(response.body, str) else response.body
        reason = REASONS.get(response.status, "Unknown")
        lines = [
            f"{version if version in ('HTTP/1.0', 'HTTP/1.1') else 'HTTP/1.1'} {response.status} {reason}",
            f"content-type: {response.content_type}",
            "cache-control: no-cache, max-age=0",
            "x-content-type-options: nosniff",
            f"date: {formatdate(time.time(), usegmt=True)}",
            "server: envoy",
            f"content-length: {len(body)}",
        ]
        lines += [f"{k}: {v}" for k, v in response.headers]
        if not keep_alive:
            lines.append("connection: close")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if not head_only:
            writer.write(body)
        await writer.drain()


def parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        raise BadRequest(400, "bad request encoding") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise BadRequest(400, "malformed request line")
    method, target, version = parts
    if not method.isalpha() or not method.isupper():
        raise BadRequest(400, "malformed method")
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise BadRequest(400, "unsupported HTTP version")
    if not target.startswith("/") or any(c.isspace() or ord(c) < 0x21 or ord(c) == 0x7F for c in target):
        raise BadRequest(400, "malformed request target")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or any(c in name for c in ' \t"(),/;<=>?@[\\]{}'):
            raise BadRequest(400, "malformed header")
        if any(ord(c) < 0x20 and c != "\t" or ord(c) == 0x7F for c in value):
            raise BadRequest(400, "invalid header value")
        key = name.lower()
        if key == "content-length" and key in headers and headers[key] != value.strip():
            raise BadRequest(400, "conflicting content-length")
        headers[key] = value.strip()
    return method, target, version, headers


async def read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "transfer-encoding" in headers:
        if "content-length" in headers:
            raise BadRequest(400, "both content-length and transfer-encoding")
        if headers["transfer-encoding"].lower() != "chunked":
            raise BadRequest(501, "unsupported transfer-encoding")
        return await _read_chunked(reader)
    cl = headers.get("content-length")
    if cl is None:
        return b""
    if not cl.isdigit():
        raise BadRequest(400, "invalid content-length")
    n = int(cl)
    if n > MAX_BODY_BYTES:
        raise BadRequest(413, "request body too large")
    return await reader.readexactly(n) if n else b""


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        line = await reader.readuntil(b"\r\n")
        size_text = line[:-2].split(b";")[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise BadRequest(400, "invalid chunk size") from None
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                pass
            return bytes(body)
        if len(body) + size > MAX_BODY_BYTES:
            raise BadRequest(413, "request body too large")
        body += await reader.readexactly(size)
        if await reader.readexactly(2) != b"\r\n":
            raise BadRequest(400, "malformed chunk")


def _keep_alive(version: str, headers: dict[str, str]) -> bool:
    conn = headers.get("connection", "").lower()
    if version == "HTTP/1.0":
        return "keep-alive" in conn
    return "close" not in conn


async def start_admin(server, address) -> AdminServer:
    """Start the admin on an ``envoy.config.core.v3.Address`` (``bootstrap.admin.address``)."""
    sa = address.socket_address
    admin = AdminServer(server, sa.address or "127.0.0.1", sa.port_value)
    await admin.start()
    return admin
