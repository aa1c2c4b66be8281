"""Sans-IO HTTP/1.1 codec on httptools (llhttp), for downstream requests and upstream responses.

Parsers turn bytes into events and never raise out of ``feed``::

    p = RequestParser(max_header_bytes=60 * 1024)
    for ev in p.feed(data):   # RequestHead, Data, EndOfMessage, ProtocolError
        ...

* Pipelining: one ``feed`` may yield the events of several messages, in order.
* Bodies stream as ``Data`` events (chunked framing is removed; trailers are dropped).
* ``Upgrade`` (and ``CONNECT``): after the ``EndOfMessage`` of a request (or a 101 response) whose
  head says ``upgrade=True``, every further byte is tunnel payload and comes out as ``Data``.
* After a ``ProtocolError`` the parser is dead: ``feed`` returns ``[]``. The connection must close.
* Header limits: the size of the head (URL plus header names and values, as Envoy counts it) beyond
  ``max_header_bytes``, or more than ``max_headers_count`` headers, gives a 431 (requests) / 502
  (responses) ``ProtocolError``.

Requests: ``Host`` becomes ``:authority``; the head carries ``:method``, ``:path``, ``:authority``
and ``:scheme`` (``http``; absolute-form URLs ``http://host/path`` fill ``:scheme``/``:authority``
from the URL, as a forward proxy needs).

Responses (used by the upstream connection pool): call ``expect(method)`` once per request sent,
so that a response to ``HEAD`` is known to carry no body. 1xx responses other than 101 are swallowed
(Envoy does not forward ``100 Continue`` by default) unless ``emit_informational=True``. A body
without ``Content-Length`` or chunked framing lasts until the connection closes: call
``feed_eof()`` when the peer closes to get its ``EndOfMessage`` (or a ``ProtocolError`` when a
framed body was cut short).
"""

from __future__ import annotations

import collections
import http
from dataclasses import dataclass, field

import httptools

from proxy.core.headers import Headers

DEFAULT_MAX_HEADER_BYTES = 60 * 1024
DEFAULT_MAX_HEADERS_COUNT = 100


# --------------------------------------------------------------------------------------------- events


@dataclass(slots=True)
class RequestHead:
    headers: Headers
    keep_alive: bool
    upgrade: bool
    expect_continue: bool
    http_version: str  # "1.1" or "1.0"


@dataclass(slots=True)
class ResponseHead:
    headers: Headers
    keep_alive: bool
    upgrade: bool
    http_version: str
    code: int = field(
        default=0, compare=False
    )  # the status as a number (the parser sets it; 0: read :status)

    @property
    def status(self) -> int:
        return int(self.headers.get(":status") or 0)


@dataclass(slots=True)
class Data:
    data: bytes


@dataclass(slots=True)
class EndOfMessage:
    pass


@dataclass(slots=True)
class ProtocolError:
    status: int  # the HTTP status to answer with (400, 431, ...; 502 for upstream responses)
    reason: str  # Envoy-style response code details, e.g. "http1.codec_error"


END_OF_MESSAGE = EndOfMessage()
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


class _BodyOnly:
    """The protocol of the request parser that gets heads already cut: no ``on_header`` (httptools
    registers its header callbacks only when the protocol has one) and no head callbacks; only the
    body of a ``Content-Length`` request comes back."""

    __slots__ = ("on_body",)

    def __init__(self, on_body) -> None:
        self.on_body = on_body


# Header names as received (str) -> lower-case; bounded like _NAMES.
_STR_NAMES: dict[str, str] = {}
_VERSIONS = {"HTTP/1.1": "1.1", "HTTP/1.0": "1.0"}
# Names whose presence decides more than a header: llhttp frames, keeps alive or upgrades on them.
_CUT_SPECIAL = frozenset(
    ("host", "connection", "expect", "content-length", "transfer-encoding", "upgrade", "proxy-connection")
)


def _absolute_form(method: str, url: str, authority: str | None, scheme: str) -> list[tuple[str, str]]:
    """The pseudo-headers of a request whose target is not origin-form (``/...``): CONNECT's
    authority-form, a forward proxy's ``http://host/path``, ``*``."""
    if method == "CONNECT":
        return [(":method", method), (":authority", url)]
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
    return pseudo


class RequestParser(_ParserBase):
    """Parses requests from a downstream connection.

    Two llhttp parsers share the connection, one message at a time. A request whose whole head is
    in the read that begins with it (the usual case) has its head cut here from the bytes (one regex
    pass, no per-header callback) and given to ``_fast`` (built without ``on_header``: llhttp still
    validates every byte and frames the message, and any error it finds is the error). Everything
    else goes to ``_p``, which gets each header through ``on_header`` with the limits checked as they
    come: heads split across reads, heads that could reach a limit, leading CRLFs, chunked or
    upgrade requests, unusual ``Connection`` values, HTTP/0.9. A ``Content-Length`` body of a cut
    message is fed to ``_fast`` up to its last byte, so the next message starts at a known offset.
    A parser that ended a message without keep-alive keeps the connection (llhttp then refuses
    more data, as one parser would)."""

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
        self._fast = httptools.HttpRequestParser(_BodyOnly(self.on_body))
        self._body_left = 0  # Content-Length bytes of a cut message still to come
        self._fast_closed = False  # a cut message ended without keep-alive: _fast keeps the connection
        self._slow_closed = False  # the same for _p

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
        if url[:1] == "/" and method != "CONNECT":
            pseudo = [(":method", method), (":path", url)]
            if authority is not None:
                pseudo.append((":authority", authority))
            pseudo.append((":scheme", self.scheme))
        else:
            pseudo = _absolute_form(method, url, authority, self.scheme)
        raw = None
        data = self._feed_data
        if data is not None:
            # The head began this read: keep its header lines as received, when they are exactly one
            # CRLF-ended line per header and the one Host line is what :authority says.
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
        if not p.should_keep_alive():
            self._slow_closed = True
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
        first = True  # `data` is the whole read (a raw block may be kept)
        while True:
            left = self._body_left
            if left:  # the rest of a cut message's Content-Length body
                if len(data) < left:
                    self._body_left = left - len(data)
                    self._feed_fast(data)
                    return events
                self._body_left = 0
                if not self._feed_fast(data if len(data) == left else data[:left]):
                    return events
                self._in_message = False
                self._completed_in_feed = True
                events.append(END_OF_MESSAGE)
                data = data[left:]
            elif self._in_message or self._slow_closed:
                return self._feed_slow(data, first)
            elif self._fast_closed:
                self._feed_fast(data)
                return events
            else:
                end = data.find(b"\r\n\r\n")
                if end < 0 or end + 4 > self.max_header_bytes or data[:1] in b"\r\n":
                    return self._feed_slow(data, first)
                used = self._cut_message(data, end, first)
                if used < 0:
                    return self._feed_slow(data, first)
                if self.dead:
                    return events
                data = data[used:]
            if not data:
                return events
            first = False

    def _cut_message(self, data: bytes, end: int, first: bool) -> int:
        """The message at the start of `data`, whose head ends at `end` (its blank line), cut here
        and validated by ``_fast``. Returns the bytes of `data` it took, or -1 when this message is
        for the callback parser (nothing was fed then)."""
        lines = data[:end].decode("latin-1").split("\r\n")
        request_line = lines.pop(0)
        parts = request_line.split(" ")
        if len(parts) != 3:  # llhttp takes runs of spaces and HTTP/0.9's two parts: theirs to cut
            return -1
        method, url, version = parts
        version = _VERSIONS.get(version)
        if version is None or method == "CONNECT" or len(lines) > self.max_headers_count:
            return -1
        regular: list[tuple[str, str]] = []
        authority = connection = expect = length = None
        hosts = 0
        if lines:
            names = _STR_NAMES
            for line in lines:  # llhttp accepted nothing but `name:[blanks]value` lines
                name, _, value = line.partition(":")
                key = names.get(name)
                if key is None:
                    key = name.lower()
                    if len(names) < _NAMES_MAX:
                        names[name] = key
                value = value.lstrip(" \t")  # llhttp drops leading blanks, keeps trailing ones
                if key in _CUT_SPECIAL:
                    if key == "host":
                        hosts += 1
                        if authority is None:
                            authority = value
                        continue
                    if key == "connection":
                        low = value.lower()
                        if low != "keep-alive" and low != "close":
                            return -1
                        connection = value if connection is None else connection + "," + value
                    elif key == "expect":
                        expect = value
                    elif key == "content-length":
                        if length is not None or not (value.isascii() and value.isdigit()) or len(value) > 15:
                            return -1
                        length = int(value)
                    else:  # transfer-encoding, upgrade, proxy-connection
                        return -1
                regular.append((key, value))
        head_len = end + 4
        try:
            self._fast.feed_data(data if head_len == len(data) else data[:head_len])
        except Exception as exc:  # llhttp refused the head: the error the callback parser gives too
            self._in_head = self._in_message = True
            self._error(
                400,
                _error_details(exc) if isinstance(exc, httptools.HttpParserError) else "http1.codec_error",
            )
            return 0
        if url[:1] == "/":
            pseudo = [(":method", method), (":path", url)]
            if authority is not None:
                pseudo.append((":authority", authority))
            pseudo.append((":scheme", self.scheme))
            raw = data[len(request_line) + 2 : end + 2] if first and hosts == 1 else None
        else:
            pseudo = _absolute_form(method, url, authority, self.scheme)
            raw = None
        pseudo += regular
        keep_alive = version == "1.1" if connection is None else _keep_alive(version, connection)
        if not keep_alive:
            self._fast_closed = True
        head = _new(RequestHead)
        head.headers = Headers.from_lowercase(pseudo, raw)
        head.keep_alive = keep_alive
        head.upgrade = False
        head.expect_continue = expect is not None and version == "1.1" and expect.lower() == "100-continue"
        head.http_version = version
        events = self._events
        events.append(head)
        self._in_head = False
        if length:
            self._in_message = True
            body_end = head_len + length
            if body_end > len(data):
                self._body_left = body_end - len(data)
                if head_len < len(data):
                    self._feed_fast(data[head_len:])
                return len(data)
            if not self._feed_fast(data[head_len:body_end]):
                return 0
        self._in_message = False
        self._completed_in_feed = True
        events.append(END_OF_MESSAGE)
        return head_len + length if length else head_len

    def _feed_fast(self, data: bytes) -> bool:
        """Body bytes of a cut message (or data after its close) to ``_fast``; False when it died."""
        try:
            self._fast.feed_data(data)
        except Exception as exc:
            self._error(
                400,
                _error_details(exc) if isinstance(exc, httptools.HttpParserError) else "http1.codec_error",
            )
            return False
        return True

    def _feed_slow(self, data: bytes, first: bool) -> list:
        """`data` to the callback parser (every header through ``on_header``, limits as they come)."""
        events = self._events
        self._feed_data = data if first and not self._in_message and data[:1] != b"\r" else None
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


# ------------------------------------------------------------------------------------------ responses


class ResponseParser(_ParserBase):
    """Parses responses from an upstream connection (see the module docstring for HEAD and 1xx)."""

    _head_error_status = 502

    def __init__(
        self,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        max_headers_count: int = DEFAULT_MAX_HEADERS_COUNT,
        emit_informational: bool = False,
    ) -> None:
        super().__init__(max_header_bytes, max_headers_count)
        self.emit_informational = emit_informational
        self._methods: collections.deque[str] = collections.deque()
        self._p = httptools.HttpResponseParser(self)
        self._reason = b""
        self._skip = False  # swallowing a 1xx
        self._until_close = False
        self._head_buf = b""  # bytes of the head of a response to HEAD

    def expect(self, method: str) -> None:
        """Tell the parser a request with `method` was sent; its response comes in order."""
        self._methods.append(method.upper())

    def on_status(self, reason: bytes) -> None:
        self._head_size += len(reason)

    def on_headers_complete(self) -> None:
        self._in_head = False
        p = self._p
        status = p.get_status_code()
        version = p.get_http_version()
        items = self._items
        if 100 <= status < 200 and status != 101 and not self.emit_informational:
            self._skip = True
            return
        self._skip = False
        connection = None
        chunked = False
        has_cl = False
        for k, v in items:
            if k == "connection":
                connection = v if connection is None else connection + "," + v
            elif k == "transfer-encoding":
                chunked = chunked or "chunked" in v.lower()
            elif k == "content-length":
                has_cl = True
        items.insert(0, (":status", _STATUS_STR.get(status) or str(status)))  # the list is this message's
        headers = Headers.from_lowercase(items)
        if connection is None:
            keep_alive = version == "1.1"
        elif connection == "keep-alive":  # what nginx and most servers send: keep-alive in 1.0 and 1.1
            keep_alive = True
        else:
            keep_alive = _keep_alive(version, connection)
        no_body = status < 200 or status in (204, 304)
        self._until_close = not (no_body or chunked or has_cl)
        if self._until_close:
            keep_alive = False
        head = _new(ResponseHead)  # as in the request parser
        head.headers = headers
        head.keep_alive = keep_alive
        head.upgrade = status == 101
        head.http_version = version
        head.code = status
        self._events.append(head)

    def on_body(self, body: bytes) -> None:
        ev = _new(Data)
        ev.data = body
        self._events.append(ev)

    def on_message_complete(self) -> None:
        self._in_message = False
        self._completed_in_feed = True
        if self._skip:
            self._skip = False
            return
        self._until_close = False
        if self._methods:
            self._methods.popleft()
        self._events.append(END_OF_MESSAGE)

    def _feed_httptools(self, parser, data: bytes) -> bool:
        """Feed `parser`; return False when the parser died (error event appended)."""
        try:
            parser.feed_data(data)
        except Exception as exc:
            return self._feed_error(exc, data)
        return True

    def _feed_error(self, exc: BaseException, data: bytes) -> bool:
        """What feeding raised: an upgrade (the rest is tunnel data) or a dead parser. Returns False."""
        if isinstance(exc, httptools.HttpParserUpgrade):
            self.upgraded = True
            try:
                offset = int(exc.args[0])
            except Exception:  # pragma: no cover
                offset = len(data)
            if offset < len(data):
                self._events.append(Data(data[offset:]))
        elif isinstance(exc, httptools.HttpParserCallbackError):
            cause = exc.__context__
            reason = cause.reason if isinstance(cause, _LimitExceeded) else "upstream_protocol_error"
            self._error(502, reason)
        else:
            self._error(502, "upstream_protocol_error")
        return False

    def _feed_head_response(self, data: bytes) -> bytes | None:
        """Responses to HEAD: parse exactly the head with a throwaway parser. Returns unconsumed
        bytes, or None when more bytes are needed (or the parser died)."""
        buf = self._head_buf + data
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            self._head_buf = buf
            if len(buf) > self._partial_limit:
                self._error(502, "http1.headers_too_large")
            return None
        self._head_buf = b""
        head, rest = buf[: end + 4], buf[end + 4 :]
        saved = self._p
        self._p = httptools.HttpResponseParser(self)
        try:
            ok = self._feed_httptools(self._p, head)
        finally:
            self._p = saved
        if not ok:
            return None
        if not self._in_message:  # llhttp ended it (1xx, 204, 304, Content-Length: 0): on_message_complete
            return rest  # counted it (or swallowed a 1xx); ending it again popped the next method
        self._in_message = False
        self._until_close = False
        self._methods.popleft()
        self._events.append(END_OF_MESSAGE)
        return rest

    def feed(self, data: bytes) -> list:
        if self.dead or not data:
            return []
        if self.upgraded:
            return [Data(data)]
        events = self._events = []
        self._completed_in_feed = False
        while data:
            if not self._in_message and self._methods and self._methods[0] == "HEAD":
                rest = self._feed_head_response(data)
                if rest is None or self.dead or self.upgraded:
                    return events
                data = rest
                continue
            try:  # the common case of _feed_httptools, without the call
                self._p.feed_data(data)
            except Exception as exc:
                self._feed_error(exc, data)
                return events
            break
        if self._in_head and self._check_partial_head(len(data)):
            return self._error(502, "http1.headers_too_large")
        return events

    @property
    def idle(self) -> bool:
        return not self._in_message and not self._head_buf

    def feed_eof(self) -> list:
        """The upstream closed: ends a read-until-close body, or reports a truncated response."""
        if self.dead or self.upgraded:
            return []
        self.dead = True
        if self._in_message and self._until_close and not self._in_head:
            self._in_message = False
            if self._methods:
                self._methods.popleft()
            return [END_OF_MESSAGE]
        if self._in_message or self._head_buf:
            return [ProtocolError(502, "upstream_reset_before_response_complete")]
        return []


# ---------------------------------------------------------------------------------------- serializers

_REASONS = {s.value: s.phrase for s in http.HTTPStatus}
_STATUS_STR = {code: str(code) for code in _REASONS}
# The HTTP/1.1 status lines of the known codes, keyed by the :status text.
_STATUS_LINES_11 = {str(code): f"HTTP/1.1 {code} {phrase}" for code, phrase in _REASONS.items()}


def reason_phrase(status: int) -> str:
    return _REASONS.get(status, "Unknown")


def _header_block(lines: list[str]) -> bytes:
    block = "\r\n".join(lines)
    if block.count("\n") != len(lines) - 1:  # a CR/LF inside a name or value: never inject
        lines = [ln.replace("\r", " ").replace("\n", " ") for ln in lines]
        block = "\r\n".join(lines)
    return (block + "\r\n\r\n").encode("latin-1", "replace")


def status_line(status: str, http_version: str = "1.1") -> str:
    """The status line (without CRLF) for the :status text `status`."""
    line = _STATUS_LINES_11.get(status) if http_version == "1.1" else None
    if line is None:
        line = f"HTTP/{http_version} {status} {reason_phrase(int(status))}"
    return line


def encode_head_lines(lines: list[str]) -> bytes:
    """A head from its lines (the status or request line first, then ``name: value`` lines), each
    without CRLF; a CR or LF inside a line becomes a space (never a header injection)."""
    return _header_block(lines)


def encode_response_head(headers: Headers, http_version: str = "1.1") -> bytes:
    """Status line and headers (pseudo-headers are not written; names go out lower-case)."""
    items = headers.items()
    if items and items[0][0] == ":status":  # where the codec and the connection manager put it
        status = items[0][1] or "200"
    else:
        status = headers.get(":status") or "200"
    line = _STATUS_LINES_11.get(status) if http_version == "1.1" else None
    if line is None:
        line = f"HTTP/{http_version} {status} {reason_phrase(int(status))}"
    lines = [f"{k}: {v}" for k, v in items if k[0] != ":"]
    lines.insert(0, line)
    return _header_block(lines)


def encode_request_head(headers: Headers, http_version: str = "1.1") -> bytes:
    """Request line and headers; ``:authority`` goes out as ``host``. Headers that still carry the
    received head's raw lines (``Headers.raw_block``) go out as received plus what was appended."""
    raw = headers.raw_block
    if raw is not None:
        items = headers.items()
        if len(items) > 1 and items[0][0] == ":method" and items[1][0] == ":path":  # the codec's order
            method, path = items[0][1] or "GET", items[1][1] or "/"
        else:
            method, path = headers.get(":method") or "GET", headers.get(":path") or "/"
        if method != "CONNECT":
            block, added = raw
            line = f"{method} {path} HTTP/{http_version}\r\n".encode("latin-1", "replace")
            if not added:
                return line + block + b"\r\n"
            return line + block + _header_block([f"{k}: {v}" for k, v in added])
    method = headers.get(":method") or "GET"
    authority = headers.get(":authority")
    target = authority if method == "CONNECT" else (headers.get(":path") or "/")
    lines = [f"{method} {target} HTTP/{http_version}"]
    if authority is not None:
        lines.append(f"host: {authority}")
    lines.extend([f"{k}: {v}" for k, v in headers.items() if k[0] != ":" and k != "host"])
    return _header_block(lines)


LAST_CHUNK = b"0\r\n\r\n"
CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"


def encode_chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (empty data gives nothing: the last chunk is LAST_CHUNK)."""
    if not data:
        return b""
    return b"%x\r\n%b\r\n" % (len(data), data)
