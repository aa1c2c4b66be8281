"""Opening one upstream connection: TCP or a Unix socket (a ``pipe`` address), with TLS when the
cluster has a ``transport_socket``.

``open_connection(loop, protocol_factory, address, transport_socket, stats_scope, source_address)`` returns
``(transport, protocol)`` like ``loop.create_connection``, but only once the TLS handshake (and the
SAN check) succeeded. Every failure is an ``OSError`` (``UpstreamTlsError`` for TLS), which the pools
already map to a connect failure (Envoy's UF).

The caller's protocol is created only after the handshake: until then a ``_Gate`` is the TLS layer's
application, so a failed handshake never reaches the caller's protocol (no double accounting), and
whatever the upstream sends right after the handshake is kept and replayed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from proxy.tls.transport import TlsError


class UpstreamTlsError(ConnectionError):
    """The TLS handshake with the upstream failed (or its certificate's SANs did not match)."""

    def __init__(self, message: str, reason: str = "connection_error") -> None:
        super().__init__(message)
        self.reason = reason


def is_pipe(address: tuple[str, int]) -> bool:
    """A ``pipe`` endpoint is kept as ``(path, 0)``: port 0 is never a valid TCP endpoint."""
    return address[1] == 0


class _Gate(asyncio.Protocol):
    """Stands in for the caller's protocol during the handshake; keeps what arrives meanwhile."""

    def __init__(self) -> None:
        self.transport = None
        self.chunks: list[bytes] = []
        self.eof = False
        self.lost: tuple[BaseException | None] | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)

    def eof_received(self) -> bool:
        self.eof = True
        return True

    def connection_lost(self, exc) -> None:
        self.lost = (exc,)

    def hand_over(self, tls, protocol: asyncio.BaseProtocol) -> None:
        tls.set_protocol(protocol)
        protocol.connection_made(tls)
        for chunk in self.chunks:
            protocol.data_received(chunk)
        if self.eof and not protocol.eof_received():
            tls.close()
        if self.lost is not None:
            protocol.connection_lost(self.lost[0])


async def _raw_connect(loop, factory, address: tuple[str, int], source_address=None):
    if is_pipe(address):
        return await loop.create_unix_connection(factory, address[0])
    # upstream_bind_config: bind the local address first (127.0.0.6 lets istio-init's rule pass the
    # inbound cluster's connection to the app instead of capturing it again).
    return await loop.create_connection(factory, address[0], address[1], local_addr=source_address)


async def open_connection(
    loop: asyncio.AbstractEventLoop,
    protocol_factory: Callable[[], asyncio.BaseProtocol],
    address: tuple[str, int],
    transport_socket=None,
    stats_scope=None,
    source_address: tuple[str, int] | None = None,
):
    """Connect (and handshake): ``(transport, protocol)``. Raises OSError (UpstreamTlsError for TLS);
    the caller's timeout covers the handshake too. With `source_address` (the cluster's
    ``upstream_bind_config.source_address``) the socket is bound to it before connecting; a pipe
    address has no source."""
    if transport_socket is None:
        return await _raw_connect(loop, protocol_factory, address, source_address)
    gate = _Gate()
    try:
        tls_factory = transport_socket.protocol_factory(lambda: gate, stats_scope)
    except ConnectionError as e:  # no secrets yet
        raise UpstreamTlsError(str(e), "no_secrets") from None
    _, tls = await _raw_connect(loop, tls_factory, address, source_address)
    try:
        await tls.wait_handshake()
    except TlsError as e:
        tls.abort()
        raise UpstreamTlsError(f"TLS handshake failed: {e}", e.reason) from None
    except ConnectionError as e:
        tls.abort()
        raise UpstreamTlsError(str(e), "connection_error") from None
    except BaseException:  # cancelled or timed out by the caller
        tls.abort()
        raise
    protocol = protocol_factory()
    gate.hand_over(tls, protocol)
    return tls, protocol
