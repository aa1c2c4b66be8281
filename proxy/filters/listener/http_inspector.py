"""``envoy.filters.listener.http_inspector``: detect plaintext HTTP/1.x from the request line and
set the connection's application protocol to ``http/1.1`` or ``http/1.0`` (without consuming bytes).
HTTP/2 prior knowledge (the ``PRI * HTTP/2.0`` preface) is reported as ``h2c``, as Envoy does."""

from __future__ import annotations

import re

from envoy.extensions.filters.listener.http_inspector.v3 import http_inspector_pb2

from proxy.config.registry import LISTENER_FILTERS
from proxy.config.supported import reject_unsupported
from proxy.filters.listener.base import ListenerFilter

MAX_INSPECT = 64 * 1024
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_METHOD = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


def inspect(data: bytes, eof: bool) -> tuple[str | None, bool]:
    """(protocol or None, done). Not done means: need more bytes to decide."""
    if data[: len(H2_PREFACE)] == H2_PREFACE[: len(data)] and len(data) < len(H2_PREFACE) and not eof:
        return None, False
    if data.startswith(H2_PREFACE):
        return "h2c", True
    end = data.find(b"\r\n")
    if end < 0:
        end = data.find(b"\n")
    if end < 0:
        # Give up early once the partial line cannot be a request line.
        first = data.split(b" ", 1)[0]
        if not data or (_METHOD.match(first) and len(data) < MAX_INSPECT and not eof):
            return None, eof
        return None, True
    parts = data[:end].rstrip(b"\r").split(b" ")
    if len(parts) != 3 or not _METHOD.match(parts[0]) or not parts[1]:
        return None, True
    version = parts[2]
    if version == b"HTTP/1.1":
        return "http/1.1", True
    if version == b"HTTP/1.0":
        return "http/1.0", True
    return None, True


class HttpInspectorFilter(ListenerFilter):
    __slots__ = ("factory",)
    max_read_bytes = MAX_INSPECT

    def __init__(self, factory) -> None:
        self.factory = factory

    def on_accept(self, conn) -> bool:
        if conn.transport_protocol not in ("", "raw_buffer"):
            return True  # TLS: nothing to see in plaintext
        return False

    def on_data(self, conn, data: bytes, eof: bool) -> bool:
        proto, done = inspect(data, eof)
        if not done:
            return False
        stats = self.factory
        if proto == "http/1.1":
            stats.http11.inc()
        elif proto == "http/1.0":
            stats.http10.inc()
        elif proto == "h2c":
            stats.http2.inc()
        else:
            stats.not_found.inc()
        if proto is not None:
            conn.application_protocols = [proto]
        return True


class HttpInspectorFactory:
    def __init__(self, ctx) -> None:
        scope = ctx.stats.scope("http_inspector.")
        self.http10 = scope.counter("http10_found")
        self.http11 = scope.counter("http11_found")
        self.http2 = scope.counter("http2_found")
        self.not_found = scope.counter("http_not_found")

    def create(self) -> HttpInspectorFilter:
        return HttpInspectorFilter(self)


@LISTENER_FILTERS.register("envoy.filters.listener.http_inspector", http_inspector_pb2.HttpInspector)
def make_http_inspector(msg: http_inspector_pb2.HttpInspector, ctx, path: str) -> HttpInspectorFactory:
    reject_unsupported(msg, {}, path)
    return HttpInspectorFactory(ctx)
