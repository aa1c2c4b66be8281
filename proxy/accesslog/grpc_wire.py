"""Envoy's ``HTTPAccessLogEntry`` / ``TCPAccessLogEntry`` written straight as protobuf wire bytes. Pure.

Building the entry as a protobuf object costs ~40 µs per request in Python (every field assignment
crosses into the C extension), parsing it back ~10 µs; the same bytes written here cost a fraction
of that, and the parts that repeat from one request to the next (Istio's label Struct, the listener's
address, the TLS properties of a connection, a set of response flags) are encoded once and reused.
The result parses into exactly the message ``grpc_entries.http_entry`` / ``tcp_entry`` build (a unit
test holds the two together); field numbers come from the generated descriptors, never typed here.

``EntryEncoder.http(si, ...)`` / ``.tcp(si, ...)`` return one entry's bytes; ``batch_message`` wraps
entries as a ``StreamAccessLogsMessage``.
"""

from __future__ import annotations

from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.data.accesslog.v3 import accesslog_pb2 as A
from envoy.service.accesslog.v3 import als_pb2 as S
from google.protobuf import duration_pb2, timestamp_pb2, wrappers_pb2

from proxy.accesslog.grpc_entries import (
    _HTTP_VERSIONS,
    _METHODS,
    FLAG_FIELDS,
    PEER_METADATA_HEADER,
    _tls_properties,
    ssl_info,
)

_VARINT, _LEN = 0, 2
_CACHE_MAX = 4096
_SMALL = [bytes((i,)) for i in range(128)]


def varint(n: int) -> bytes:
    if n < 128:
        if n >= 0:
            return _SMALL[n]
        n &= 0xFFFFFFFFFFFFFFFF  # a negative int64: ten bytes, as protobuf writes it
    elif n < 0x4000:
        return bytes((n & 0x7F | 0x80, n >> 7))
    elif n < 0x200000:
        return bytes((n & 0x7F | 0x80, (n >> 7) & 0x7F | 0x80, n >> 14))
    elif n < 0x10000000:
        return bytes((n & 0x7F | 0x80, (n >> 7) & 0x7F | 0x80, (n >> 14) & 0x7F | 0x80, n >> 21))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _tag(cls, name: str, wire: int) -> bytes:
    return varint(cls.DESCRIPTOR.fields_by_name[name].number << 3 | wire)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field (string, bytes, sub-message), present even when empty."""
    n = len(payload)
    return tag + (_SMALL[n] if n < 128 else varint(n)) + payload


def _string(tag: bytes, s: str) -> bytes:
    if not s:
        return b""  # proto3: an empty string is not written
    b = s.encode()
    n = len(b)
    return tag + (_SMALL[n] if n < 128 else varint(n)) + b


def _uint(tag: bytes, n: int) -> bytes:
    if not n:
        return b""
    return tag + (_SMALL[n] if 0 < n < 128 else varint(n))


# --- tags ----------------------------------------------------------------------------------------

T_SOCKET = _tag(address_pb2.Address, "socket_address", _LEN)
T_SA_ADDRESS = _tag(address_pb2.SocketAddress, "address", _LEN)
T_SA_PORT = _tag(address_pb2.SocketAddress, "port_value", _VARINT)
T_SECONDS = _tag(timestamp_pb2.Timestamp, "seconds", _VARINT)
T_NANOS = _tag(timestamp_pb2.Timestamp, "nanos", _VARINT)
assert T_SECONDS == _tag(duration_pb2.Duration, "seconds", _VARINT)
assert T_NANOS == _tag(duration_pb2.Duration, "nanos", _VARINT)
T_VALUE = _tag(wrappers_pb2.UInt32Value, "value", _VARINT)
T_MAP_KEY = _tag(base_pb2.Metadata.FilterMetadataEntry, "key", _LEN)
T_MAP_VALUE = _tag(base_pb2.Metadata.FilterMetadataEntry, "value", _LEN)
T_FILTER_METADATA = _tag(base_pb2.Metadata, "filter_metadata", _LEN)

C = A.AccessLogCommon
T_DOWNSTREAM_REMOTE = _tag(C, "downstream_remote_address", _LEN)
T_DOWNSTREAM_LOCAL = _tag(C, "downstream_local_address", _LEN)
T_TLS = _tag(C, "tls_properties", _LEN)
T_START = _tag(C, "start_time", _LEN)
T_DURATION = _tag(C, "duration", _LEN)
T_LAST_TX = _tag(C, "time_to_last_downstream_tx_byte", _LEN)
T_UPSTREAM_REMOTE = _tag(C, "upstream_remote_address", _LEN)
T_UPSTREAM_CLUSTER = _tag(C, "upstream_cluster", _LEN)
T_ROUTE_NAME = _tag(C, "route_name", _LEN)
T_ATTEMPTS = _tag(C, "upstream_request_attempt_count", _VARINT)
T_FLAGS = _tag(C, "response_flags", _LEN)
T_METADATA = _tag(C, "metadata", _LEN)

H = A.HTTPAccessLogEntry
T_COMMON = _tag(H, "common_properties", _LEN)
T_PROTOCOL = _tag(H, "protocol_version", _VARINT)
T_REQUEST = _tag(H, "request", _LEN)
T_RESPONSE = _tag(H, "response", _LEN)

R = A.HTTPRequestProperties
T_METHOD = _tag(R, "request_method", _VARINT)
T_REQ_BODY = _tag(R, "request_body_bytes", _VARINT)
T_REQ_HEADERS = _tag(R, "request_headers", _LEN)
T_HEADER_KEY = _tag(R.RequestHeadersEntry, "key", _LEN)
T_HEADER_VALUE = _tag(R.RequestHeadersEntry, "value", _LEN)
# The request fields taken from headers: header name -> tag (the first value wins, as Headers.get).
REQUEST_HEADER_FIELDS = {
    ":scheme": _tag(R, "scheme", _LEN),
    ":authority": _tag(R, "authority", _LEN),
    ":path": _tag(R, "path", _LEN),
    "user-agent": _tag(R, "user_agent", _LEN),
    "referer": _tag(R, "referer", _LEN),
    "x-forwarded-for": _tag(R, "forwarded_for", _LEN),
    "x-request-id": _tag(R, "request_id", _LEN),
    "x-envoy-original-path": _tag(R, "original_path", _LEN),
}

P = A.HTTPResponseProperties
T_CODE = _tag(P, "response_code", _LEN)
T_RESP_BODY = _tag(P, "response_body_bytes", _VARINT)
T_RESP_HEADERS = _tag(P, "response_headers", _LEN)
T_CODE_DETAILS = _tag(P, "response_code_details", _LEN)
assert T_HEADER_KEY == _tag(P.ResponseHeadersEntry, "key", _LEN)

_PROTOCOLS = {name: _uint(T_PROTOCOL, v) for name, v in _HTTP_VERSIONS.items()}
T_TCP_CONNECTION = _tag(A.TCPAccessLogEntry, "connection_properties", _LEN)
T_TCP_COMMON = _tag(A.TCPAccessLogEntry, "common_properties", _LEN)
T_RECEIVED = _tag(A.ConnectionProperties, "received_bytes", _VARINT)
T_SENT = _tag(A.ConnectionProperties, "sent_bytes", _VARINT)

T_IDENTIFIER = _tag(S.StreamAccessLogsMessage, "identifier", _LEN)
T_HTTP_LOGS = _tag(S.StreamAccessLogsMessage, "http_logs", _LEN)
T_TCP_LOGS = _tag(S.StreamAccessLogsMessage, "tcp_logs", _LEN)
T_LOG_ENTRY = _tag(S.StreamAccessLogsMessage.HTTPAccessLogEntries, "log_entry", _LEN)
assert T_LOG_ENTRY == _tag(S.StreamAccessLogsMessage.TCPAccessLogEntries, "log_entry", _LEN)
assert len(T_LOG_ENTRY) == 1


def _time(ns: int) -> bytes:
    """A Timestamp or Duration of ``ns`` >= 0 nanoseconds (FromNanoseconds' split)."""
    seconds, nanos = divmod(ns, 1_000_000_000)
    return _uint(T_SECONDS, seconds) + _uint(T_NANOS, nanos)


def metadata_field(namespace: str, struct_bytes: bytes) -> bytes:
    """The ``common_properties.metadata`` field ``Metadata{filter_metadata{namespace: <Struct>}}``,
    from the Struct's serialized bytes."""
    entry = _string(T_MAP_KEY, namespace) + _field(T_MAP_VALUE, struct_bytes)
    return _field(T_METADATA, _field(T_FILTER_METADATA, entry))


def batch_message(kind_http: bool, entries: list[bytes], identifier: bytes = b"") -> bytes:
    """A ``StreamAccessLogsMessage`` carrying ``entries`` (each one entry's bytes); ``identifier`` is
    the serialized Identifier for the first message of a stream. Joined once from the entries and
    their field heads (no per-entry copy)."""
    out = [b"", b"", b""]  # the identifier, the logs field's tag and length
    total = 0
    for e in entries:
        n = len(e)
        if n < 128:
            out += (T_LOG_ENTRY, _SMALL[n], e)
            total += n + 2
        else:
            v = _V12[n] if n < 4096 else varint(n)
            out += (T_LOG_ENTRY, v, e)
            total += n + 1 + len(v)
    if identifier:
        out[0] = _field(T_IDENTIFIER, identifier)
    out[1] = T_HTTP_LOGS if kind_http else T_TCP_LOGS
    out[2] = varint(total)
    return b"".join(out)


class EntryEncoder:
    """Encodes entries for one logger; memoises the parts that repeat (bounded caches)."""

    def __init__(self) -> None:
        self._addresses: dict = {}
        self._upstreams: dict = {}
        self._tls: dict = {}
        self._flags: dict = {}
        self._responses: dict = {}
        self._second = (-1, b"")  # the last start_time second and its encoding

    # ---- memoised parts

    def _address(self, tag: bytes, addr) -> bytes:
        """``_socket``: an Address with its SocketAddress, present whenever ``addr`` is."""
        if not addr:
            return b""
        key = (tag, addr)
        out = self._addresses.get(key)
        if out is None:
            sa = _string(T_SA_ADDRESS, addr[0]) + _uint(T_SA_PORT, int(addr[1] or 0))
            out = _field(tag, _field(T_SOCKET, sa))
            if len(self._addresses) >= _CACHE_MAX:
                self._addresses.clear()
            self._addresses[key] = out
        return out

    def _upstream(self, host: str | None) -> bytes:
        """``_upstream``: "ip:port" -> upstream_remote_address."""
        if not host:
            return b""
        out = self._upstreams.get(host)
        if out is None:
            ip, sep, port = host.rpartition(":")
            out = b""
            if sep and port.isdigit():
                sa = _string(T_SA_ADDRESS, ip.strip("[]")) + _uint(T_SA_PORT, int(port))
                out = _field(T_UPSTREAM_REMOTE, _field(T_SOCKET, sa))
            if len(self._upstreams) >= _CACHE_MAX:
                self._upstreams.clear()
            self._upstreams[host] = out
        return out

    def _tls_properties(self, info) -> bytes:
        """One connection's TLS facts, encoded once per connection (the info object; kept alive by
        the cache, so its id is not reused while cached)."""
        hit = self._tls.get(id(info))
        if hit is not None and hit[0] is info:
            return hit[1]
        tls = A.TLSProperties()
        _tls_properties(tls, info)
        raw = tls.SerializeToString(deterministic=True)
        out = _field(T_TLS, raw) if raw else b""
        if len(self._tls) >= _CACHE_MAX:
            self._tls.clear()
        self._tls[id(info)] = (info, out)
        return out

    def _response_flags(self, flags) -> bytes:
        key = frozenset(flags)
        out = self._flags.get(key)
        if out is None:
            msg = A.ResponseFlags()
            for f in key:
                name = FLAG_FIELDS.get(f)
                if name is not None:
                    setattr(msg, name, True)
                elif f == "UAEX":
                    msg.unauthorized_details.reason = A.ResponseFlags.Unauthorized.EXTERNAL_SERVICE
            out = _field(T_FLAGS, msg.SerializeToString(deterministic=True))
            self._flags[key] = out  # bounded by the flag combinations (few)
        return out

    def _start_time(self, ns: int) -> bytes:
        seconds, nanos = divmod(ns, 1_000_000_000)
        last = self._second
        if last[0] != seconds:
            last = self._second = (seconds, _uint(T_SECONDS, seconds))
        return _field(T_START, last[1] + _uint(T_NANOS, nanos))

    # ---- entries

    def common(self, si, metadata: bytes) -> bytes:
        """``fill_common`` plus ``metadata``, the metadata field already encoded (``metadata_field``)."""
        start = si.start_monotonic
        end = si.end_monotonic if si.end_monotonic is not None else start
        dur = _time(max(0, int((end - start) * 1e9)))
        parts = [
            self._address(T_DOWNSTREAM_REMOTE, si.downstream_remote_address),
            self._address(T_DOWNSTREAM_LOCAL, si.downstream_local_address),
            self._start_time(int(si.start_time * 1e9)),
            _field(T_DURATION, dur),
            _field(T_LAST_TX, dur),
            self._upstream(si.upstream_host),
            _string(T_UPSTREAM_CLUSTER, si.upstream_cluster),
            _string(T_ROUTE_NAME, si.route_name),
            _uint(T_ATTEMPTS, si.upstream_request_attempts),
            metadata,
        ]
        ssl = si.downstream_ssl
        if ssl is not None:
            info = ssl_info(ssl)
            if info is not None:
                parts.append(self._tls_properties(info))
        if si.response_flags:
            parts.append(self._response_flags(si.response_flags))
        return b"".join(parts)

    def http(self, si, metadata: bytes, request_headers_to_log=(), response_headers_to_log=()) -> bytes:
        """``http_entry`` with ``metadata`` (``metadata_field``) as the common metadata."""
        req = []
        h = si.request_headers
        if h is not None:
            method = None
            found = {}
            fields = REQUEST_HEADER_FIELDS
            for name, value in h.items():
                tag = fields.get(name)
                if tag is not None:
                    if name not in found:
                        found[name] = None
                        if value:
                            b = value.encode()
                            n = len(b)
                            req.append(tag + (_SMALL[n] if n < 128 else varint(n)) + b)
                elif name == ":method" and method is None:
                    method = value
            if method:
                req.append(_uint(T_METHOD, _METHODS.get(method, 0)))
            if request_headers_to_log:
                req.append(self._header_map(h, request_headers_to_log, T_REQ_HEADERS))
        req.append(_uint(T_REQ_BODY, si.bytes_received))
        key = (si.response_code, si.response_code_details, si.bytes_sent)
        resp = self._responses.get(key)
        if resp is None:
            resp = b"".join(
                (
                    _field(T_CODE, _uint(T_VALUE, key[0])) if key[0] else b"",
                    _string(T_CODE_DETAILS, key[1]),
                    _uint(T_RESP_BODY, key[2]),
                )
            )
            if len(self._responses) >= _CACHE_MAX:
                self._responses.clear()
            self._responses[key] = resp
        rh = si.response_headers
        if rh is not None and response_headers_to_log:
            resp += self._header_map(rh, response_headers_to_log, T_RESP_HEADERS)
        return b"".join(
            (
                _field(T_COMMON, self.common(si, metadata)),
                _PROTOCOLS.get(si.protocol, b""),
                _field(T_REQUEST, b"".join(req)),
                _field(T_RESPONSE, resp),
            )
        )

    @staticmethod
    def _header_map(headers, names, tag: bytes) -> bytes:
        out = []
        for name in names:
            v = headers.get(name)
            if v is not None:
                out.append(_field(tag, _string(T_HEADER_KEY, name) + _string(T_HEADER_VALUE, v)))
        return b"".join(out)

    def tcp(self, si, metadata: bytes) -> bytes:
        """``tcp_entry`` with ``metadata`` as the common metadata."""
        conn = _uint(T_RECEIVED, si.bytes_received) + _uint(T_SENT, si.bytes_sent)
        return _field(T_TCP_COMMON, self.common(si, metadata)) + _field(T_TCP_CONNECTION, conn)


# --- the flush's encoder for HTTP entries ----------------------------------------------------------

# The request headers an entry is made of: its shape (encoded once per distinct shape), then the values
# that change with every request and the peer header Istio's labels are read from.
_REQ_SHAPE = (
    ":method",
    ":scheme",
    ":authority",
    "user-agent",
    "referer",
    "x-forwarded-for",
    "x-envoy-original-path",
)
_REQ_VALUES = (":path", "x-request-id", PEER_METADATA_HEADER)
_REQ_NAMES = frozenset(_REQ_SHAPE + _REQ_VALUES)
T_PATH = REQUEST_HEADER_FIELDS[":path"]
T_REQUEST_ID = REQUEST_HEADER_FIELDS["x-request-id"]
_NANOS_BYTE = T_NANOS[0]
# One byte each: the sums of lengths below count on it.
assert len(T_NANOS) == len(T_START) == len(T_LAST_TX) == len(T_COMMON) == len(T_REQUEST) == 1
assert len(T_PATH) == len(T_REQUEST_ID) == 1
assert len(T_DURATION) == 2


# Varint pieces without bit arithmetic per entry (each int operation is an object in CPython): 7 and
# 14 low bits with the continuation bit set on every byte. _C14 (16384 two-byte strings, ~0.6 MB) is
# made with the first HttpEntryWriter.
_C7 = [bytes((i | 0x80,)) for i in range(128)]
_C14: list[bytes] = []
_DURATION_3, _LAST_TX_3 = T_DURATION + b"\x04" + T_NANOS, T_LAST_TX + b"\x04" + T_NANOS
_DURATION_4, _LAST_TX_4 = T_DURATION + b"\x05" + T_NANOS, T_LAST_TX + b"\x05" + T_NANOS


# Field heads and lengths from tables (a concatenation per entry less): a varint below 4096 (an entry's
# and its parts' lengths), the path and request id fields' tag and length, the two durations' sizes.
_V12 = [varint(i) for i in range(4096)]
_PATH_HEADS = [T_PATH + _SMALL[n] for n in range(128)]
_RID_HEADS = [T_REQUEST_ID + _SMALL[n] for n in range(128)]
_TIMES_3 = len(_DURATION_3) + len(_LAST_TX_3) + 6
_TIMES_4 = len(_DURATION_4) + len(_LAST_TX_4) + 8


def _make_c14() -> None:
    if not _C14:
        _C14.extend(bytes((i & 0x7F | 0x80, i >> 7 | 0x80)) for i in range(0x4000))


def _nanos(n: int) -> bytes:
    """The ``nanos`` field of a Timestamp or Duration, 0 <= n < 10**9 (absent when 0)."""
    if n >= 0x200000:
        if n >= 0x10000000:
            return bytes((_NANOS_BYTE, n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14 & 0x7F | 0x80,
                          n >> 21 & 0x7F | 0x80, n >> 28))  # fmt: skip
        return bytes((_NANOS_BYTE, n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14 & 0x7F | 0x80, n >> 21))
    return T_NANOS + varint(n) if n else b""


def _first_values(items, names) -> dict:
    """The first value of each of ``names`` in ``items`` (as Headers.get), when a name repeats."""
    out: dict = {}
    for k, v in items:
        if k in names and k not in out:
            out[k] = v
    return out


class HttpEntryWriter:
    """``EntryEncoder.http`` with Istio's labels as one call per entry: the flush's hot loop.

    An entry is mostly parts that repeat from one request to the next. Encoded once and looked up by
    what determines them (bounded caches):

    * the common part: downstream addresses and TLS properties, upstream host, cluster, route name,
      attempts and Istio's labels, by those inputs, the discovered peer (or the peer header) and the
      authority (with the cluster, the destination service); the labels themselves by their own inputs,
      ``labels(si, found, header)`` making them on a miss;
    * the request's shape (method, scheme, authority, user agent, referer, XFF, original path);
    * the response (code, details, body size).

    Per entry only the start time, the durations, the path, the request id and the request body size
    are encoded. The cached parts an entry needs are found by comparing its inputs with those of the
    last entry of the same downstream connection (a tuple compare: no hashing of the request's fresh
    header strings); a request unlike its connection's last goes through the caches by hash. The
    entry is joined once from its pieces, the lengths summed from known sizes (no intermediate
    concatenations). The request headers are read with one ``dict`` of them (C), not a Python loop; a
    header map with a repeated name takes the first value of each, as ``Headers.get``. The bytes parse
    into the message ``EntryEncoder.http`` makes (unit-tested against it)."""

    def __init__(self, inbound: bool, labels, request_headers_to_log=(), response_headers_to_log=()) -> None:
        _make_c14()
        self.inbound = inbound
        self.labels = labels
        self.request_headers_to_log = tuple(request_headers_to_log)
        self.response_headers_to_log = tuple(response_headers_to_log)
        self._parts = EntryEncoder()  # the parts' encoders, on a miss
        self._peer_key = "downstream_peer" if inbound else "upstream_peer"
        # (remote address, rest) -> the entry's cached parts (_parts_miss); remote address -> the last
        # of them its connection used, compared with the next entry's ``rest`` (no hashing)
        self._entries: dict = {}
        self._by_connection: dict = {}
        self._label_fields: dict = {}  # (peer key, cluster, authority, identities) -> (peer dict, bytes)
        self._requests: dict = {}  # shape values -> encoded fields
        self._responses: dict = {}  # (code, details, body bytes) -> the response field
        self._second = (-1, b"", b"", -(10**18), 0)  # the last start second: _start_head

    def encode(self, si) -> bytes:
        # The request headers: a dict of them, first values.
        h = si.request_headers
        if h is not None:
            items = h.items()
            d = dict(items)
            if len(d) != len(items):
                d = _first_values(items, _REQ_NAMES)
            get = d.get
            shape = tuple(map(get, _REQ_SHAPE))
            path, rid, header = map(get, _REQ_VALUES)
        else:
            shape = path = rid = header = None
        # The discovered peer (metadata exchange), else the peer header.
        state = si.filter_state
        found = state.get(self._peer_key) if state else None
        if type(found) is dict:
            peer = id(found)
        else:
            found = None
            if not self.inbound:
                rh = si.response_headers
                header = rh.get(PEER_METADATA_HEADER) if rh is not None else None
            peer = header or ""
        info = si.downstream_ssl
        if info is not None:
            info = ssl_info(info)
        # Everything but the times, the path, the request id, the body size and the flags, compared
        # (not hashed) with what the same downstream connection logged last; another connection's or
        # a changed request's goes through the caches (_parts_miss).
        remote = si.downstream_remote_address
        rest = (
            shape,
            peer,
            si.downstream_local_address,
            si.upstream_host,
            si.upstream_cluster,
            si.route_name,
            si.upstream_request_attempts,
            id(info),
            si.protocol,
            si.response_code,
            si.response_code_details,
            si.bytes_sent,
        )
        last = self._by_connection.get(remote)
        if last is None or last[0] != rest:
            last = self._parts_miss(si, found, header, info, remote, rest)
        common, common_len, req_shape, req_len, tail = last[1:6]
        flags = si.response_flags
        if flags:
            flags = self._parts._response_flags(flags)
            common_len += len(flags)
        else:
            flags = b""
        # Times: the start (the field's head and seconds made once per second); the duration, which is
        # also the time to the last byte sent downstream; the usual sizes from the varint tables.
        second = self._second
        ns = int(si.start_time * 1e9)
        n = ns - second[3]
        if not 0 <= n < 1_000_000_000:  # another second than the last entry's: its head once
            second = self._second = self._start_head(ns // 1_000_000_000)
            n = ns - second[3]
        if n >= 0x10000000:  # most starts: a 5-byte nanos varint, from the 14-bit table
            c14 = _C14
            s1, s2, s3, s4 = second[1], c14[n & 0x3FFF], c14[n >> 14 & 0x3FFF], _SMALL[n >> 28]
            common_len += second[4]
        else:
            s1 = second[2] + _nanos(n)
            s1 = T_START + _SMALL[len(s1)] + s1
            s2 = s3 = s4 = b""
            common_len += len(s1)
        end = si.end_monotonic
        n = int((end - si.start_monotonic) * 1e9) if end is not None else 0
        if 0x4000 <= n < 0x200000:  # 16 us to 2 ms: a 3-byte varint
            d1, t1, v1, v2, v3 = _DURATION_3, _LAST_TX_3, _C14[n & 0x3FFF], _SMALL[n >> 14], b""
            common_len += _TIMES_3
        elif 0x200000 <= n < 0x10000000:  # to 268 ms: 4 bytes
            d1, t1, v1, v2, v3 = (
                _DURATION_4,
                _LAST_TX_4,
                _C14[n & 0x3FFF],
                _C7[n >> 14 & 0x7F],
                _SMALL[n >> 21],
            )
            common_len += _TIMES_4
        else:
            v1 = (_nanos(n) if n > 0 else b"") if n < 1_000_000_000 else _time(n)
            v2 = _SMALL[len(v1)]
            d1, t1, v2, v3 = T_DURATION + v2, T_LAST_TX + v2, b"", b""
            common_len += 2 * len(v1) + 5
        # The request: its shape, then what changes with every request.
        if path:
            p = path.encode()
            n = len(p)
            if n < 128:
                ph = _PATH_HEADS[n]
                req_len += n + 2
            else:
                ph = T_PATH + varint(n)
                req_len += len(ph) + n
        else:
            p = ph = b""
        if rid:
            r = rid.encode()
            n = len(r)
            if n < 128:
                ih = _RID_HEADS[n]
                req_len += n + 2
            else:
                ih = T_REQUEST_ID + varint(n)
                req_len += len(ih) + n
        else:
            r = ih = b""
        more = b""
        if si.bytes_received:
            more = T_REQ_BODY + varint(si.bytes_received)
        if self.request_headers_to_log and h is not None:
            more += EntryEncoder._header_map(h, self.request_headers_to_log, T_REQ_HEADERS)
        if more:
            req_len += len(more)
        if self.response_headers_to_log:
            tail = _PROTOCOLS.get(si.protocol, b"") + self._response_with_headers(si)
        return b"".join(
            (
                T_COMMON,
                _V12[common_len] if common_len < 4096 else varint(common_len),
                common,
                flags,
                s1, s2, s3, s4,
                d1, v1, v2, v3,
                t1, v1, v2, v3,
                T_REQUEST,
                _V12[req_len] if req_len < 4096 else varint(req_len),
                req_shape,
                ph, p,
                ih, r,
                more,
                tail,
            )
        )  # fmt: skip

    # ---- misses

    @staticmethod
    def _start_head(seconds: int) -> tuple:
        """(seconds, the start_time field up to a 5-byte nanos varint: tag, length, seconds, the nanos
        tag; the seconds field alone; the second's first nanosecond)."""
        sec = _uint(T_SECONDS, seconds)
        head = T_START + _SMALL[len(sec) + 6] + sec + T_NANOS
        return seconds, head, sec, seconds * 1_000_000_000, len(head) + 5

    def _request_shape(self, shape: tuple) -> bytes:
        out = []
        method = shape[0]
        if method:
            out.append(_uint(T_METHOD, _METHODS.get(method, 0)))
        for name, value in zip(_REQ_SHAPE[1:], shape[1:], strict=True):
            if value:
                out.append(_string(REQUEST_HEADER_FIELDS[name], value))
        raw = b"".join(out)
        if len(self._requests) >= _CACHE_MAX:
            self._requests.clear()
        self._requests[shape] = raw
        return raw

    def _parts_miss(self, si, found, header, info, remote, rest: tuple) -> tuple:
        """The cached parts for ``rest`` on the connection ``remote``: (rest, the common part without
        times and flags, its length, the request's shape, its length, the protocol and the response
        fields, the peer dict, the TLS facts). Kept alive by the caches, so the ids in ``rest`` stay
        theirs."""
        key = (remote, rest)
        parts = self._entries.get(key)
        if parts is None:
            shape, peer, local, host, cluster, route, attempts, _, protocol, code, details, sent = rest
            common = self._common(si, found, header, info, peer, remote, local, host, cluster, route, attempts,
                                  shape[2] if shape is not None else None)  # fmt: skip
            req = b""
            if shape is not None:
                req = self._requests.get(shape)
                if req is None:
                    req = self._request_shape(shape)
            rkey = (code, details, sent)
            resp = self._responses.get(rkey)
            if resp is None:
                resp = self._response(rkey)
            tail = _PROTOCOLS.get(protocol, b"") + resp
            parts = (rest, common, len(common), req, len(req), tail, found, info)
            if len(self._entries) >= _CACHE_MAX:
                self._entries.clear()
            self._entries[key] = parts
        if len(self._by_connection) >= _CACHE_MAX:
            self._by_connection.clear()
        self._by_connection[remote] = parts
        return parts

    def _common(
        self, si, found, header, info, peer, remote, local, host, cluster, route, attempts, authority
    ):
        """Every field of AccessLogCommon but the times and flags."""
        parts = self._parts
        tls, identities = b"", None
        if info is not None:
            tls = parts._tls_properties(info)
            if self.inbound:
                identities = (
                    tuple(getattr(info, "peer_uri_sans", ()) or ()),
                    tuple(getattr(info, "local_uri_sans", ()) or ()),
                    getattr(info, "peer_certificate_presented", None),
                )
        lkey = (peer, cluster, authority, identities)
        labels = self._label_fields.get(lkey)
        if labels is None or labels[0] is not found:
            labels = (found, self.labels(si, found, header))
            if len(self._label_fields) >= _CACHE_MAX:
                self._label_fields.clear()
            self._label_fields[lkey] = labels
        return b"".join(
            (
                parts._address(T_DOWNSTREAM_REMOTE, remote),
                parts._address(T_DOWNSTREAM_LOCAL, local),
                tls,
                parts._upstream(host),
                _string(T_UPSTREAM_CLUSTER, cluster),
                _string(T_ROUTE_NAME, route),
                _uint(T_ATTEMPTS, attempts),
                labels[1],
            )
        )

    def _response(self, key: tuple) -> bytes:
        raw = self._response_field(*key, b"")
        if len(self._responses) >= _CACHE_MAX:
            self._responses.clear()
        self._responses[key] = raw
        return raw

    def _response_with_headers(self, si) -> bytes:
        rh = si.response_headers
        logged = (
            EntryEncoder._header_map(rh, self.response_headers_to_log, T_RESP_HEADERS)
            if rh is not None
            else b""
        )
        return self._response_field(si.response_code, si.response_code_details, si.bytes_sent, logged)

    @staticmethod
    def _response_field(code: int, details: str, sent: int, logged: bytes) -> bytes:
        payload = b"".join(
            (
                _field(T_CODE, _uint(T_VALUE, code)) if code else b"",
                _string(T_CODE_DETAILS, details),
                _uint(T_RESP_BODY, sent),
                logged,
            )
        )
        return _field(T_RESPONSE, payload)
