"""``envoy.filters.listener.original_dst``: read the connection's original destination (before an
iptables REDIRECT/DNAT) with ``getsockopt(SOL_IP, SO_ORIGINAL_DST)`` and restore it as the
connection's local address, as Envoy does."""

from __future__ import annotations

import socket
import struct

from envoy.extensions.filters.listener.original_dst.v3 import original_dst_pb2

from proxy.config.registry import LISTENER_FILTERS
from proxy.config.supported import reject_unsupported
from proxy.filters.listener.base import ListenerFilter

SOL_IP = 0
SO_ORIGINAL_DST = 80
SOL_IPV6 = 41
IP6T_SO_ORIGINAL_DST = 80


def parse_sockaddr_in(raw: bytes) -> tuple[str, int] | None:
    """Parse a ``struct sockaddr_in`` (family, port in network order, IPv4 address)."""
    if len(raw) < 8:
        return None
    family = struct.unpack_from("=H", raw, 0)[0]
    if family != socket.AF_INET:
        return None
    port = struct.unpack_from("!H", raw, 2)[0]
    return socket.inet_ntop(socket.AF_INET, raw[4:8]), port


def parse_sockaddr_in6(raw: bytes) -> tuple[str, int] | None:
    if len(raw) < 24:
        return None
    family = struct.unpack_from("=H", raw, 0)[0]
    if family != socket.AF_INET6:
        return None
    port = struct.unpack_from("!H", raw, 2)[0]
    return socket.inet_ntop(socket.AF_INET6, raw[8:24]), port


def original_dst(sock: socket.socket) -> tuple[str, int] | None:
    """The original destination of a redirected TCP socket, or None (not redirected / unsupported)."""
    try:
        if sock.family == socket.AF_INET6:
            return parse_sockaddr_in6(sock.getsockopt(SOL_IPV6, IP6T_SO_ORIGINAL_DST, 28))
        return parse_sockaddr_in(sock.getsockopt(SOL_IP, SO_ORIGINAL_DST, 16))
    except OSError:
        return None


class OriginalDstFilter(ListenerFilter):
    __slots__ = ()

    def on_accept(self, conn) -> bool:
        transport = conn.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is None:
            return True
        dst = original_dst(sock)
        if dst is not None:
            conn.original_dst = dst
            conn.local_address = dst  # Envoy "restores" the local address
        return True


class OriginalDstFactory:
    def create(self) -> OriginalDstFilter:
        return OriginalDstFilter()


@LISTENER_FILTERS.register("envoy.filters.listener.original_dst", original_dst_pb2.OriginalDst)
def make_original_dst(msg: original_dst_pb2.OriginalDst, ctx, path: str) -> OriginalDstFactory:
    reject_unsupported(msg, {}, path)
    return OriginalDstFactory()
