"""The request parser as it was before the head was cut from the raw bytes (every header through
httptools' ``on_header`` callback): the oracle for tests/unit/proxy/core/test_request_head_cut_oracle.py.
Kept here, in the tests only, as the reference implementation."""

# ruff: noqa

from __future__ import annotations

import httptools

from proxy.core.headers import Headers
from proxy.core.http1 import (
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_MAX_HEADERS_COUNT,
    END_OF_MESSAGE,
    Data,
    ProtocolError,
    RequestHead,
)

_new = object.__new__


class _LimitExceeded(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _error_details(exc: BaseException) -> str:
    msg = str(exc)
    low = msg.lower()
    if "content-length" in low and "transfer-encoding" in low:
        return "http1.content_length_and_chunked_not_allowed"
    if "transfer-encoding" in low:
        return "http1.invalid_transfer_encoding"
    if "content-length" in low:
        return (
            "http1.content_length_not_allowed" if "duplicate" not in low else "http1.duplicate_content_length"
        )
    if "header value char" in low or "header token" in low or "header field char" in low:
        return "http1.invalid_characters"
    if "url" in low:
        return "http1.invalid_url"
    return "http1.codec_error"


def _keep_alive(version: str, connection: str | None) -> bool:
    if connection is None:
        return version == "1.1"
    tokens = connection.lower()
    if version == "1.1":
        return "close" not in [t.strip() for t in tokens.split(",")]
    return "keep-alive" in [t.strip() for t in tokens.split(",")]


# Header names as they come on the wire -> lower-case str: one dict lookup instead of a decode and a
# lower() per header. Bounded: names beyond the first _NAMES_MAX distinct ones are converted each time.
_NAMES: dict[bytes, str] = {}
_NAMES_MAX = 512


class _ParserBase:
    """Shared state and callbacks of the request and response parsers."""

    _head_error_status = 400

    def __init__(self, max_header_bytes: int, max_headers_count: int) -> None:
        self.max_header_bytes = max_header_bytes
        self.max_headers_count = max_headers_count
        self._partial_limit = max_header_bytes + 4 * max_headers_count + 1024
        self._events: list = []
        self._items: list[tuple[str, str]] = []
        self._head_size = 0
        self._in_head = False  # a message began and its head is not complete
        self._in_message = False
        self._head_wire = 0  # wire bytes of an incomplete head, an upper-bounded estimate
        self._completed_in_feed = False
        self.dead = False
        self.upgraded = False

    # -- httptools callbacks (shared) --
    def on_message_begin(self) -> None:
        self._items = []
        self._head_size = 0
        self._in_head = True
        self._in_message = True
        self._head_wire = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:
            return  # a trailer: dropped
        size = self._head_size = self._head_size + len(name) + len(value)
        items = self._items
        if size > self.max_header_bytes or len(items) >= self.max_headers_count:
            raise _LimitExceeded(
                "http1.headers_too_large" if size > self.max_header_bytes else "http1.too_many_headers"
            )
        key = _NAMES.get(name)
        if key is None:
            key = name.decode("latin-1").lower()
            if len(_NAMES) < _NAMES_MAX:
                _NAMES[name] = key
        items.append((key, value.decode("latin-1")))

    def _error(self, status: int, reason: str) -> list:
        self.dead = True
        self._events.append(ProtocolError(status, reason))
        return self._events

    def _check_partial_head(self, nbytes: int) -> bool:
        """After a feed: bound the bytes of a head that is still incomplete. True = too large."""
        if not self._in_head:
            return False
        if self._completed_in_feed:
            self._head_wire = 0  # cannot tell where the new head began in this chunk; count from next
        else:
            self._head_wire += nbytes
        return self._head_wire > self._partial_limit


# ------------------------------------------------------------------------------------------- requests


class RequestParser(_ParserBase):
    """Parses requests from a downstream connection."""

    def __init__(
        self,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        max_headers_count: int = DEFAULT_MAX_HEADERS_COUNT,
        scheme: str = "http",
    ) -> None:
        super().__init__(max_header_bytes, max_headers_count)
        self.scheme = scheme
        self._url: list[bytes] = []
        self._feed_data: bytes | None = None  # this read's bytes when it began at a message start
        self._p = httptools.HttpRequestParser(self)

    def on_message_begin(self) -> None:  # the base's, written out (no super() call per request)
        self._items = []
        self._head_size = 0
        self._in_head = True
        self._in_message = True
        self._head_wire = 0
        self._url = []

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        if self._head_size > self.max_header_bytes:
            raise _LimitExceeded("http1.headers_too_large")
        self._url.append(url)

    def on_headers_complete(self) -> None:
        p = self._p
        self._in_head = False
        method = p.get_method().decode("latin-1")
        version = p.get_http_version()
        url = (self._url[0] if len(self._url) == 1 else b"".join(self._url)).decode("latin-1")
        items = self._items
        authority = None
        connection = None
        expect = None
        regular: list[tuple[str, str]] = []
        for kv in items:
            k = kv[0]
            if k == "host":
                if authority is None:
                    authority = kv[1]
                continue
            if k == "connection":
                connection = kv[1] if connection is None else connection + "," + kv[1]
            elif k == "expect":
                expect = kv[1]
            regular.append(kv)
        scheme = self.scheme
        if method == "CONNECT":
            pseudo = [(":method", method), (":authority", url)]
        else:
            path = url
            if url[:1] != "/" and url != "*":
                low = url[:8].lower()
                if low.startswith("http://") or low.startswith("https://"):
                    sep = url.index("://")
                    scheme = url[:sep].lower()
                    rest = url[sep + 3 :]
                    slash = rest.find("/")
                    q = rest.find("?")
                    cut = min(x for x in (slash, q, len(rest)) if x >= 0)
                    authority = rest[:cut]
                    path = rest[cut:] or "/"
                    if path[0] == "?":
                        path = "/" + path
            pseudo = [(":method", method), (":path", path)]
            if authority is not None:
                pseudo.append((":authority", authority))
            pseudo.append((":scheme", scheme))
        raw = None
        data = self._feed_data
        if data is not None:
            # The head began this read (the usual case): keep its header lines as received, when they
            # are exactly one CRLF-ended line per header and the one Host line is what :authority says.
            self._feed_data = None
            end = data.find(b"\r\n\r\n")
            start = data.find(b"\r\n") + 2
            if (
                end > 0
                and start <= end + 2
                and url[:1] == "/"
                and len(items) - len(regular) == 1
                and data.count(b"\n", start, end + 2) == len(items)
                and data.count(b"\r", start, end + 2) == len(items)
            ):
                raw = data[start : end + 2]
        pseudo += regular
        headers = Headers.from_lowercase(pseudo, raw)
        upgrade = bool(p.should_upgrade())
        expect_continue = expect is not None and version == "1.1" and expect.lower() == "100-continue"
        keep_alive = version == "1.1" if connection is None else _keep_alive(version, connection)
        # The event made without the dataclass's __init__ frame (same class, every field set).
        head = _new(RequestHead)
        head.headers = headers
        head.keep_alive = keep_alive
        head.upgrade = upgrade
        head.expect_continue = expect_continue
        head.http_version = version
        self._events.append(head)

    def on_body(self, body: bytes) -> None:
        ev = _new(Data)
        ev.data = body
        self._events.append(ev)

    def on_message_complete(self) -> None:
        self._in_message = False
        self._completed_in_feed = True
        self._events.append(END_OF_MESSAGE)

    @property
    def idle(self) -> bool:
        """No message is in progress (between requests)."""
        return not self._in_message

    @property
    def in_head(self) -> bool:
        return self._in_head

    def feed(self, data: bytes) -> list:
        if self.dead or not data:
            return []
        if self.upgraded:
            return [Data(data)]
        events = self._events = []
        self._completed_in_feed = False
        self._feed_data = data if not self._in_message and data[:1] != b"\r" else None
        try:
            self._p.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self.upgraded = True
            try:
                offset = int(exc.args[0])
            except Exception:  # pragma: no cover - defensive
                offset = len(data)
            if offset < len(data):
                events.append(Data(data[offset:]))
            return events
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _LimitExceeded):
                return self._error(431, cause.reason)
            return self._error(400, "http1.codec_error")
        except _LimitExceeded as exc:  # pragma: no cover - httptools wraps callback errors
            return self._error(431, exc.reason)
        except httptools.HttpParserError as exc:
            return self._error(400, _error_details(exc))
        except Exception:  # never raise out of feed
            return self._error(400, "http1.codec_error")
        if self._in_head and self._check_partial_head(len(data)):
            return self._error(431, "http1.headers_too_large")
        return events

    def feed_eof(self) -> list:
        """The peer closed. A request cut short yields a ProtocolError (the caller sees a disconnect)."""
        if self.dead or self.upgraded or not self._in_message:
            return []
        self.dead = True
        return [ProtocolError(400, "downstream_remote_disconnect")]
