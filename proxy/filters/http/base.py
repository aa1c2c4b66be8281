"""The HTTP filter contract, in the style of Envoy's ``envoy/http/filter.h``.

A filter *factory* is built once per configuration (it parses and validates its typed_config). For
each request the connection manager asks every factory for a cheap per-stream ``HttpFilter`` and
runs the chain:

* decode path: ``on_request_headers`` in configuration order. A hook returns ``CONTINUE`` (go on to
  the next filter) or ``STOP`` (this filter has answered, e.g. with ``send_local_reply``, or has
  taken the stream over). The last filter is the router, which answers by proxying upstream.
* encode path: every response (proxied or local) passes ``on_response_headers`` of the filters that
  were reached, in reverse order, before the headers go on the wire.

Hooks are coroutines, so a filter may wait (fault delay, an ext_authz call) without blocking others.
The chain runner, not the filter, decides what happens next.

A filter whose request hook usually finishes without waiting (as Envoy's ``decodeHeaders`` is
synchronous) may also define ``decode_headers_sync(stream, end_stream)``: a plain method the connection
manager calls instead of ``on_request_headers`` (no coroutine, no await). It returns ``CONTINUE`` or
``STOP`` as the hook would, or, when it has to wait after all (an ext_authz cache miss), an awaitable
whose result is that status; the connection manager awaits it in the filter's place in the chain.
Such a filter keeps ``on_request_headers`` (``sync_request_hook`` below) for callers that await it.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from proxy.core.headers import Headers
    from proxy.core.stream_info import StreamInfo


class FilterStatus(enum.Enum):
    CONTINUE = 0
    STOP = 1


CONTINUE = FilterStatus.CONTINUE
STOP = FilterStatus.STOP


class HttpFilter:
    """Base class of per-stream HTTP filters; override the hooks you need."""

    __slots__ = ()

    # Optional synchronous request hook (see the module docstring): None, or a method
    # ``decode_headers_sync(stream, end_stream) -> FilterStatus | Awaitable[FilterStatus]``.
    decode_headers_sync = None

    async def on_request_headers(self, stream: HttpStream, end_stream: bool) -> FilterStatus:
        return CONTINUE

    async def on_response_headers(
        self, stream: HttpStream, headers: Headers, end_stream: bool
    ) -> FilterStatus:
        return CONTINUE

    def on_destroy(self) -> None:
        """The stream ended (completed, reset or the client went away). Cancel timers here."""


async def sync_request_hook(self: HttpFilter, stream: HttpStream, end_stream: bool) -> FilterStatus:
    """``on_request_headers`` of a filter that defines ``decode_headers_sync``: the same decision for
    callers that await the hook (tests, benchmarks, a filter chain of another runner)."""
    status = self.decode_headers_sync(stream, end_stream)
    if status.__class__ is not FilterStatus:
        status = await status
    return status


class HttpFilterFactory(Protocol):
    def create(self) -> HttpFilter: ...


class RawDuplex(Protocol):
    """A raw byte pipe to an upstream, used once a request is upgraded (WebSocket, CONNECT)."""

    def write(self, data: bytes) -> None: ...
    async def read(self) -> bytes: ...  # b"" at end of stream
    def close(self) -> None: ...


class HttpStream(Protocol):
    """One request/response exchange, implemented by the HTTP connection manager."""

    request_headers: Headers  # includes :method, :path, :authority, :scheme
    stream_info: StreamInfo
    connection: Any  # the DownstreamConnection (addresses, TLS facts, original destination)
    config: Any  # the connection manager's immutable config (stat prefix, route provider, ...)
    # Lower-case (name, value) pairs set on this stream's response however it is answered (upstream
    # or local reply), as Headers.set does, after the encoder filters ran. A request hook that only
    # adds response headers sets this instead of overriding on_response_headers, so the connection
    # manager can still write the whole response at once. None: nothing to set.
    response_headers_to_set: tuple | list | None

    @property
    def route(self) -> Any | None:
        """The route matched for the current request headers (cached; None when nothing matched)."""

    def clear_route_cache(self) -> None:
        """Forget the cached route, after a filter changed headers that routing looks at."""

    def request_body(self) -> AsyncIterator[bytes]:
        """The request body as it streams in (empty for a bodiless request). Readable once."""

    async def encode_headers(self, headers: Headers, end_stream: bool) -> None:
        """Send response headers (``:status`` included) through the encoder filters."""

    async def encode_data(self, data: bytes, end_stream: bool) -> None:
        """Send response body bytes; waits while the downstream's write buffer is full."""

    async def send_local_reply(
        self,
        status: int,
        body: str | bytes = b"",
        *,
        flag: str | None = None,
        details: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer locally (Envoy's ``sendLocalReply``): sets the response flag and code details."""

    async def upgrade(self, upstream: RawDuplex) -> None:
        """After a 101 was encoded: tunnel raw bytes both ways until either side closes."""
