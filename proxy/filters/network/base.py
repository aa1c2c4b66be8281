"""The network (L4) filter contract.

A listener's filter chain ends in a *terminal* network filter, which owns the connection's bytes:
``envoy.filters.network.http_connection_manager`` or ``envoy.filters.network.tcp_proxy``. The
listener code (``proxy.core.listener``) accepts the socket as an ``asyncio.Protocol``, runs the
listener filters (original_dst, tls_inspector, http_inspector), picks the filter chain, then calls
``factory.create(connection)`` and forwards protocol events to the filter. Callbacks are synchronous,
like ``asyncio.Protocol``'s; a filter starts tasks for anything that waits.
"""

from __future__ import annotations

from typing import Any, Protocol


class DownstreamConnection(Protocol):
    """What a network filter sees of its connection (implemented by proxy.core.listener)."""

    remote_address: tuple[str, int]
    local_address: tuple[str, int]
    original_dst: tuple[str, int] | None  # from SO_ORIGINAL_DST, when the listener filter ran
    requested_server_name: str  # SNI, from tls_inspector ("" if none)
    application_protocols: list[str]  # ALPN offered by the client
    transport_protocol: str  # "raw_buffer" or "tls"
    listener: Any  # the listener (name, stats scope, draining state)
    ssl: Any  # TLS facts (peer certificate, ...) or None for plaintext

    def write(self, data: bytes) -> None: ...
    def writelines(self, chunks: list[bytes]) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...  # after the write buffer drains
    def abort(self) -> None: ...  # at once (RST)
    def is_write_paused(self) -> bool: ...
    async def drain(self) -> None: ...  # wait until the write buffer is below its low-water mark


class NetworkFilter:
    """Base class of per-connection terminal network filters."""

    def on_new_connection(self, conn: DownstreamConnection) -> None: ...
    def on_data(self, data: bytes) -> None: ...
    def on_eof(self) -> None: ...  # the peer half-closed
    def on_connection_lost(self, exc: BaseException | None) -> None: ...
    def on_drain_started(self) -> None:
        """The listener is draining: finish politely (HTTP: ``Connection: close`` on the next response)."""


class NetworkFilterFactory(Protocol):
    def create(self, conn: DownstreamConnection) -> NetworkFilter: ...
