"""``envoy.filters.listener.tls_inspector``: detect TLS and read SNI and ALPN from the ClientHello
without consuming it. Sets ``transport_protocol = "tls"``, ``requested_server_name`` and
``application_protocols`` on the connection. Handles a ClientHello split across TCP segments and
across TLS records; waits for more bytes up to ``max_client_hello_size`` (and the listener's
``listener_filters_timeout``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2

from proxy.config.errors import ConfigError
from proxy.config.registry import LISTENER_FILTERS
from proxy.config.supported import reject_unsupported
from proxy.filters.listener.base import ListenerFilter

DEFAULT_MAX_CLIENT_HELLO = 16 * 1024  # Envoy's TLS_MAX_CLIENT_HELLO
CONTENT_HANDSHAKE = 0x16
HANDSHAKE_CLIENT_HELLO = 0x01
EXT_SERVER_NAME = 0
EXT_ALPN = 16

SPEC = {
    "initial_read_buffer_size": True,
    "max_client_hello_size": True,
    "close_connection_on_client_hello_parsing_errors": True,
}

NEED_MORE = "need_more"
NOT_TLS = "not_tls"
TOO_LARGE = "too_large"
ERROR = "error"
FOUND = "found"


@dataclass
class ClientHello:
    server_name: str = ""
    alpn: list[str] = field(default_factory=list)


def _handshake_bytes(data: bytes, limit: int) -> tuple[str, bytes]:
    """Concatenate the payloads of leading handshake records until the ClientHello is whole."""
    out = bytearray()
    pos = 0
    while True:
        if len(data) - pos < 5:
            if pos == 0 and data and data[0] != CONTENT_HANDSHAKE:
                return NOT_TLS, b""
            if pos == 0 and len(data) >= 2 and data[1] != 0x03:
                return NOT_TLS, b""
            return NEED_MORE, bytes(out)
        ctype, major, _minor = data[pos], data[pos + 1], data[pos + 2]
        if ctype != CONTENT_HANDSHAKE or major != 0x03:
            return (NOT_TLS if pos == 0 else ERROR), b""
        rlen = int.from_bytes(data[pos + 3 : pos + 5], "big")
        if rlen == 0 or rlen > 16384 + 2048:
            return ERROR, b""
        avail = data[pos + 5 : pos + 5 + rlen]
        out += avail
        if len(out) >= 4:
            if out[0] != HANDSHAKE_CLIENT_HELLO:
                return ERROR, b""
            hlen = int.from_bytes(out[1:4], "big")
            if hlen + 4 > limit:
                return TOO_LARGE, b""
            if len(out) >= hlen + 4:
                return FOUND, bytes(out[4 : 4 + hlen])
        if len(avail) < rlen:
            if pos + 5 + rlen > limit + 5 * (1 + pos // 16389):
                return TOO_LARGE, b""
            return NEED_MORE, b""
        pos += 5 + rlen
        if pos > limit + 64:
            return TOO_LARGE, b""


def _parse_body(body: bytes) -> ClientHello | None:
    try:
        p = 2 + 32  # client_version, random
        sid_len = body[p]
        p += 1 + sid_len
        cs_len = int.from_bytes(body[p : p + 2], "big")
        p += 2 + cs_len
        comp_len = body[p]
        p += 1 + comp_len
        hello = ClientHello()
        if p >= len(body):
            return hello  # no extensions
        ext_total = int.from_bytes(body[p : p + 2], "big")
        p += 2
        end = min(len(body), p + ext_total)
        while p + 4 <= end:
            etype = int.from_bytes(body[p : p + 2], "big")
            elen = int.from_bytes(body[p + 2 : p + 4], "big")
            ext = body[p + 4 : p + 4 + elen]
            if len(ext) < elen:
                return None
            p += 4 + elen
            if etype == EXT_SERVER_NAME and len(ext) >= 2:
                q, lend = 2, 2 + int.from_bytes(ext[0:2], "big")
                while q + 3 <= min(lend, len(ext)):
                    ntype = ext[q]
                    nlen = int.from_bytes(ext[q + 1 : q + 3], "big")
                    name = ext[q + 3 : q + 3 + nlen]
                    q += 3 + nlen
                    if ntype == 0 and name:
                        hello.server_name = name.decode("ascii", "replace").lower()
                        break
            elif etype == EXT_ALPN and len(ext) >= 2:
                q, lend = 2, min(len(ext), 2 + int.from_bytes(ext[0:2], "big"))
                while q < lend:
                    plen = ext[q]
                    proto = ext[q + 1 : q + 1 + plen]
                    q += 1 + plen
                    if proto:
                        hello.alpn.append(proto.decode("ascii", "replace"))
        return hello
    except IndexError:
        return None


def parse_client_hello(data: bytes, limit: int = DEFAULT_MAX_CLIENT_HELLO) -> tuple[str, ClientHello | None]:
    """Classify the bytes seen so far: (NEED_MORE|NOT_TLS|TOO_LARGE|ERROR|FOUND, ClientHello|None)."""
    status, body = _handshake_bytes(data, limit)
    if status != FOUND:
        return status, None
    hello = _parse_body(body)
    if hello is None:
        return ERROR, None
    return FOUND, hello


class TlsInspectorFilter(ListenerFilter):
    __slots__ = ("factory",)

    def __init__(self, factory: TlsInspectorFactory) -> None:
        self.factory = factory

    @property
    def max_read_bytes(self) -> int:
        return self.factory.max_size

    def on_accept(self, conn) -> bool:
        return False

    def on_data(self, conn, data: bytes, eof: bool) -> bool:
        f = self.factory
        status, hello = parse_client_hello(data, f.max_size)
        if status == NEED_MORE and not eof:
            return False
        if status == FOUND:
            f.tls_found.inc()
            conn.transport_protocol = "tls"
            if hello.server_name:
                conn.requested_server_name = hello.server_name
                f.sni_found.inc()
            else:
                f.sni_not_found.inc()
            if hello.alpn:
                conn.application_protocols = list(hello.alpn)
                f.alpn_found.inc()
            else:
                f.alpn_not_found.inc()
        elif status == TOO_LARGE:
            f.too_large.inc()
            conn.reject_reason = "client hello too large"
        elif status == ERROR:
            f.tls_not_found.inc()
            if f.close_on_error:
                conn.reject_reason = "client hello parsing error"
        else:
            f.tls_not_found.inc()
        f.bytes_processed.record(len(data))
        return True


class TlsInspectorFactory:
    def __init__(self, msg: tls_inspector_pb2.TlsInspector, ctx, path: str) -> None:
        self.max_size = (
            msg.max_client_hello_size.value
            if msg.HasField("max_client_hello_size")
            else DEFAULT_MAX_CLIENT_HELLO
        )
        if self.max_size > 64 * 1024:
            raise ConfigError(f"{path}.max_client_hello_size", "must be at most 65536")
        self.close_on_error = msg.close_connection_on_client_hello_parsing_errors
        scope = ctx.stats.scope("tls_inspector.")
        self.tls_found = scope.counter("tls_found")
        self.tls_not_found = scope.counter("tls_not_found")
        self.sni_found = scope.counter("sni_found")
        self.sni_not_found = scope.counter("sni_not_found")
        self.alpn_found = scope.counter("alpn_found")
        self.alpn_not_found = scope.counter("alpn_not_found")
        self.too_large = scope.counter("client_hello_too_large")
        self.bytes_processed = scope.histogram("bytes_processed")

    def create(self) -> TlsInspectorFilter:
        return TlsInspectorFilter(self)


@LISTENER_FILTERS.register("envoy.filters.listener.tls_inspector", tls_inspector_pb2.TlsInspector)
def make_tls_inspector(msg: tls_inspector_pb2.TlsInspector, ctx, path: str) -> TlsInspectorFactory:
    reject_unsupported(msg, SPEC, path)
    return TlsInspectorFactory(msg, ctx, path)
