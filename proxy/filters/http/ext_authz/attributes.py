"""The attributes of one check: a flat view (Mixer's vocabulary, for the check cache) and the
``CheckRequest`` built from it. Pure: reads the stream, builds protos, does no I/O.

Flat names: ``source.ip``, ``source.port``, ``source.principal``, ``destination.ip``,
``destination.port``, ``destination.principal``, ``request.method``, ``request.path``,
``request.host``, ``request.scheme``, ``request.protocol``, ``request.id``,
``request.headers.<lower-case name>``, ``context_extensions.<key>`` (see docs/mixer.md).
"""

from __future__ import annotations

import time

from envoy.service.auth.v3 import external_auth_pb2

# Attributes that differ on every request: never part of a full cache key.
VOLATILE = frozenset(("source.port", "request.id", "request.time"))
VOLATILE_HEADERS = frozenset(
    (
        "x-request-id",
        "traceparent",
        "tracestate",
        "b3",
        "x-ot-span-context",
        "content-length",
    )
)
VOLATILE_HEADER_PREFIXES = ("x-b3-", "x-envoy-")
HEADER_PREFIX = "request.headers."


def tls_principals(conn) -> tuple[str, str]:
    """(peer principal, local principal) from the connection's TLS facts; ("", "") on plaintext.

    The TLS engineer's ``conn.ssl`` object is read by duck typing: ``peer_principal`` /
    ``local_principal`` strings, or ``peer_uri_sans`` / ``local_uri_sans`` lists (first URI SAN).
    """
    ssl = getattr(conn, "ssl", None)
    if ssl is None:
        return "", ""
    if hasattr(ssl, "info") and not hasattr(ssl, "peer_uri_sans"):  # proxy.tls: the transport's info
        ssl = ssl.info
        if ssl is None:
            return "", ""

    def one(side: str) -> str:
        v = getattr(ssl, f"{side}_principal", None)
        if isinstance(v, str):
            return v
        sans = getattr(ssl, f"{side}_uri_sans", None)
        return sans[0] if sans else ""

    return one("peer"), one("local")


def flatten(stream, context_extensions: dict[str, str]) -> dict[str, str]:
    conn = stream.connection
    remote = getattr(conn, "remote_address", None) or ("", 0)
    local = getattr(conn, "local_address", None) or ("", 0)
    peer_principal, local_principal = tls_principals(conn)
    h = stream.request_headers
    attrs = {
        "source.ip": remote[0],
        "source.port": str(remote[1]),
        "source.principal": peer_principal,
        "destination.ip": local[0],
        "destination.port": str(local[1]),
        "destination.principal": local_principal,
        "request.method": h.get(":method") or "",
        "request.path": h.get(":path") or "",
        "request.host": h.get(":authority") or "",
        "request.scheme": h.get(":scheme") or "",
        "request.protocol": stream.stream_info.protocol,
        "request.id": h.get("x-request-id") or "",
    }
    for name, value in h.items():
        key = HEADER_PREFIX + name
        prev = attrs.get(key)
        attrs[key] = value if prev is None else f"{prev},{value}"  # Envoy joins repeated headers
    for k, v in context_extensions.items():
        attrs["context_extensions." + k] = v
    return attrs


def _header_value(headers, name: str) -> str | None:
    """A header as ``flatten`` keeps it: repeated values joined with ",", None when absent."""
    value = None
    for k, v in headers.items():
        if k == name:
            value = v if value is None else f"{value},{v}"
    return value


def _remote(stream) -> tuple:
    return getattr(stream.connection, "remote_address", None) or ("", 0)


def _local(stream) -> tuple:
    return getattr(stream.connection, "local_address", None) or ("", 0)


_GETTERS = {
    "source.ip": lambda st, ext: _remote(st)[0],
    "source.port": lambda st, ext: str(_remote(st)[1]),
    "source.principal": lambda st, ext: tls_principals(st.connection)[0],
    "destination.ip": lambda st, ext: _local(st)[0],
    "destination.port": lambda st, ext: str(_local(st)[1]),
    "destination.principal": lambda st, ext: tls_principals(st.connection)[1],
    "request.method": lambda st, ext: st.request_headers.get(":method") or "",
    "request.path": lambda st, ext: st.request_headers.get(":path") or "",
    "request.host": lambda st, ext: st.request_headers.get(":authority") or "",
    "request.scheme": lambda st, ext: st.request_headers.get(":scheme") or "",
    "request.protocol": lambda st, ext: st.stream_info.protocol,
    "request.id": lambda st, ext: st.request_headers.get("x-request-id") or "",
}


def getter(name: str):
    """``(stream, context_extensions) -> value`` of one flat attribute, equal to
    ``flatten(stream, context_extensions).get(name)`` without building the whole view (the check
    cache's hit path reads only the attributes a decision referenced)."""
    fixed = _GETTERS.get(name)
    if fixed is not None:
        return fixed
    if name.startswith(HEADER_PREFIX):
        header = name[len(HEADER_PREFIX) :]
        return lambda st, ext: _header_value(st.request_headers, header)
    if name.startswith("context_extensions."):
        key = name[len("context_extensions.") :]
        return lambda st, ext: ext.get(key)
    return lambda st, ext: None


# Each flat attribute as a Python expression over ``st`` (the stream) and ``ext`` (the context
# extensions), equal to ``flatten(st, ext).get(name)``: the check cache inlines them in its lookup.
_EXPRESSIONS = {
    "source.ip": "(_getattr(st.connection, 'remote_address', None) or _NO_ADDRESS)[0]",
    "source.port": "str((_getattr(st.connection, 'remote_address', None) or _NO_ADDRESS)[1])",
    "source.principal": "('' if _getattr(st.connection, 'ssl', None) is None else _principals(st.connection)[0])",
    "destination.ip": "(_getattr(st.connection, 'local_address', None) or _NO_ADDRESS)[0]",
    "destination.port": "str((_getattr(st.connection, 'local_address', None) or _NO_ADDRESS)[1])",
    "destination.principal": (
        "('' if _getattr(st.connection, 'ssl', None) is None else _principals(st.connection)[1])"
    ),
    "request.method": "(st.request_headers.get(':method') or '')",
    "request.path": "(st.request_headers.get(':path') or '')",
    "request.host": "(st.request_headers.get(':authority') or '')",
    "request.scheme": "(st.request_headers.get(':scheme') or '')",
    "request.protocol": "st.stream_info.protocol",
    "request.id": "(st.request_headers.get('x-request-id') or '')",
}
EXPRESSION_NAMESPACE = {  # the names the expressions use
    "_getattr": getattr,
    "_NO_ADDRESS": ("", 0),
    "_principals": tls_principals,
    "_header_value": _header_value,
}


def expression(name: str) -> str:
    """A Python expression over ``st`` and ``ext`` (in ``EXPRESSION_NAMESPACE``) whose value is
    ``flatten(st, ext).get(name)``; a name (possibly the server's) enters it only as a ``repr`` literal."""
    fixed = _EXPRESSIONS.get(name)
    if fixed is not None:
        return fixed
    if name.startswith(HEADER_PREFIX):
        return f"_header_value(st.request_headers, {name[len(HEADER_PREFIX) :]!r})"
    if name.startswith("context_extensions."):
        return f"ext.get({name[len('context_extensions.') :]!r})"
    return "None"


def values_function(refs: tuple[str, ...]):
    """``(stream, context_extensions) -> tuple``: the values of ``refs`` as ``flatten`` has them, in one
    generated function."""
    values = "".join(expression(name) + ", " for name in refs)
    namespace = dict(EXPRESSION_NAMESPACE)
    exec(f"def values(st, ext):\n    return ({values})\n", namespace)  # noqa: S102
    return namespace["values"]


def _volatile(name: str) -> bool:
    if name in VOLATILE:
        return True
    if name.startswith(HEADER_PREFIX):
        header = name[len(HEADER_PREFIX) :]
        return header in VOLATILE_HEADERS or header.startswith(VOLATILE_HEADER_PREFIXES)
    return False


def full_key(attrs: dict[str, str]) -> tuple:
    """The cache key when the server did not say which attributes it used."""
    return tuple(sorted((k, v) for k, v in attrs.items() if not _volatile(k)))


def build_check_request(stream, attrs: dict[str, str], context_extensions: dict[str, str]):
    req = external_auth_pb2.CheckRequest()
    a = req.attributes
    src = a.source.address.socket_address
    src.address = attrs["source.ip"]
    src.port_value = int(attrs["source.port"] or 0)
    a.source.principal = attrs["source.principal"]
    dst = a.destination.address.socket_address
    dst.address = attrs["destination.ip"]
    dst.port_value = int(attrs["destination.port"] or 0)
    a.destination.principal = attrs["destination.principal"]
    start = getattr(stream.stream_info, "start_time", None) or time.time()
    a.request.time.FromNanoseconds(int(start * 1e9))
    http = a.request.http
    http.id = attrs["request.id"]
    http.method = attrs["request.method"]
    http.path = attrs["request.path"]
    http.host = attrs["request.host"]
    http.scheme = attrs["request.scheme"]
    http.protocol = attrs["request.protocol"]
    path = http.path
    q = path.find("?")
    if q >= 0:
        http.query = path[q + 1 :]
    cl = stream.request_headers.get("content-length")
    http.size = int(cl) if cl and cl.isdigit() else -1
    n = len(HEADER_PREFIX)
    for k, v in attrs.items():
        if k.startswith(HEADER_PREFIX):
            http.headers[k[n:]] = v
    for k, v in context_extensions.items():
        a.context_extensions[k] = v
    return req
