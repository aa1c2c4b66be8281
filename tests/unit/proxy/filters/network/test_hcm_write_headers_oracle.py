"""The connection manager's response head, made in one pass (wire lines built with the kept headers),
against the previous implementation (a second Headers map edited with set/add, then
``encode_response_head``) as the oracle: same bytes on the wire, same response headers for the access
log, same framing and close decisions, over many combinations of statuses, headers and settings."""

from __future__ import annotations

import itertools
import random

import pytest

from proxy.core.headers import Headers
from proxy.core.http1 import encode_response_head
from proxy.filters.network.http_connection_manager import manager as m
from proxy.filters.network.http_connection_manager.manager import ActiveStream

_RESPONSE_HOP = m._RESPONSE_HOP


def oracle(st, headers: Headers, end_stream: bool):
    """The previous _write_headers' decisions: (head bytes, response header items, chunked, close, no_body)."""
    cfg = st.config
    status_s = headers.get(":status") or "200"
    try:
        status = int(status_s)
    except ValueError:
        status = 500
    items = []
    has_length = has_server = has_date = has_rid = False
    for kv in headers.items():
        k = kv[0]
        if k in _RESPONSE_HOP:
            continue
        if k == "content-length":
            has_length = True
        elif k == "date":
            has_date = True
        elif k == "server":
            has_server = True
        elif k == "x-request-id":
            has_rid = True
        items.append(kv)
    out = Headers.from_lowercase(items)
    hcm = st.hcm
    chunked = False
    if status == 101 and st.is_upgrade:
        out.set("connection", "upgrade")
        up = st.request_headers.get("upgrade")
        if up is not None:
            out.set("upgrade", headers.get("upgrade") or up)
    no_body = st.is_head or status < 200 or status in (204, 304)
    close = (
        not st.keep_alive
        or hcm.draining
        or st._close
        or (cfg.max_requests_per_connection and hcm.requests >= cfg.max_requests_per_connection)
    )
    if end_stream and not st.request_complete:
        close = True
    if st.is_upgrade and status != 101:
        close = True
    if not no_body and status != 101:
        if has_length:
            pass
        elif end_stream:
            out.add("content-length", "0")
        elif st.http_version == "1.1":
            out.add("transfer-encoding", "chunked")
            chunked = True
        else:
            close = True
    sht = cfg.server_header_transformation
    if sht == m._OVERWRITE:
        if has_server:
            out.set("server", cfg.server_name)
        else:
            out.add("server", cfg.server_name)
    elif sht == m._APPEND_IF_ABSENT and not has_server:
        out.add("server", cfg.server_name)
    if not has_date:
        out.add("date", m.http_date())
    if cfg.always_set_request_id_in_response and not has_rid:
        rid = st.request_headers.get("x-request-id")
        if rid is not None:
            out.add("x-request-id", rid)
    closed = False
    if close and status != 101:
        out.set("connection", "close")
        closed = True
    elif st.http_version == "1.0" and status != 101:
        out.set("connection", "keep-alive")
    return encode_response_head(out, "1.1"), list(out.items()), chunked, closed or st._close, no_body


class _Cfg:
    def __init__(self, sht, always_rid, max_rq, server_name="envoy"):
        self.server_header_transformation = sht
        self.always_set_request_id_in_response = always_rid
        self.max_requests_per_connection = max_rq
        self.server_name = server_name


class _Loop:
    def time(self):
        return 1.0

    def call_soon(self, *a):
        pass


class _Conn:
    def __init__(self):
        self.out = []

    def write(self, data):
        self.out.append(data)


class _Hcm:
    def __init__(self, cfg, draining, requests):
        self.config = cfg
        self.conn = _Conn()
        self.loop = _Loop()
        self.draining = draining
        self.requests = requests
        self._addresses = (("127.0.0.1", 1), ("127.0.0.1", 2))


class _Stream(ActiveStream):
    def _on_response_end(self):  # the head is what is compared; nothing to finish
        self.response_complete = True


def _stream(cfg, *, method, version, keep_alive, upgrade, request_complete, close, draining, requests):
    req = [(":method", method), (":path", "/"), (":authority", "a"), (":scheme", "http")]
    if upgrade:
        req += [("connection", "upgrade"), ("upgrade", "websocket")]
    req.append(("x-request-id", "rid-1"))
    st = _Stream(_Hcm(cfg, draining, requests), Headers.from_lowercase(req), version, keep_alive)
    st.is_upgrade = upgrade
    st.request_complete = request_complete
    st._close = close
    return st


RESPONSES = [
    [(":status", "200"), ("content-type", "text/plain"), ("content-length", "5")],
    [(":status", "200"), ("server", "nginx"), ("date", "Mon"), ("connection", "keep-alive"), ("etag", "x")],
    [(":status", "200"), ("server", "a"), ("x-a", "1"), ("server", "b"), ("transfer-encoding", "chunked")],
    [(":status", "204"), ("keep-alive", "timeout=5"), ("proxy-connection", "x")],
    [(":status", "304"), ("content-length", "0"), ("x-request-id", "up")],
    [(":status", "101"), ("connection", "Upgrade"), ("upgrade", "WebSocket")],
    [(":status", "101")],
    [(":status", "404"), ("x-crlf", "a\r\nx-evil: 1")],
    [(":status", "299"), ("x-u", "unknown code")],
    [(":status", "503"), ("upgrade", "h2c"), ("date", "Tue"), ("server", "s")],
    [("x-no-status", "1")],
    [(":status", "")],
    [("x-first", "1"), (":status", "201")],
    [(":status", "200"), ("x-envoy-upstream-service-time", "3"), ("content-length", "10"), ("via", "1.1 a")],
]


def _cases():
    flags = itertools.product(
        (0, 1, 2),  # server_header_transformation
        (False, True),  # always_set_request_id_in_response
        ("GET", "HEAD"),
        ("1.1", "1.0"),
        (True, False),  # keep_alive
        (False, True),  # upgrade
        (True, False),  # end_stream
    )
    return list(flags)


@pytest.mark.parametrize("resp", RESPONSES, ids=range(len(RESPONSES)))
def test_the_one_pass_head_matches_the_previous_encoding(resp, monkeypatch):
    monkeypatch.setattr(m, "http_date", lambda: "Sat, 28 Nov 2026 01:00:00 GMT")  # no second edge between
    rnd = random.Random(len(resp))
    for sht, always_rid, method, version, keep_alive, upgrade, end_stream in _cases():
        request_complete = rnd.random() < 0.8
        close = rnd.random() < 0.2
        draining = rnd.random() < 0.1
        max_rq, requests = rnd.choice(((0, 5), (3, 2), (3, 3)))
        kwargs = dict(
            method=method, version=version, keep_alive=keep_alive, upgrade=upgrade,
            request_complete=request_complete, close=close, draining=draining, requests=requests,
        )  # fmt: skip
        cfg = _Cfg(sht, always_rid, max_rq)
        ref = _stream(cfg, **kwargs)
        want = oracle(ref, Headers.from_lowercase(list(resp)), end_stream)
        st = _stream(cfg, **kwargs)
        headers = Headers.from_lowercase(list(resp))
        st._write_headers(headers, end_stream)
        head = st.hcm.conn.out[0] if end_stream else st._pending_head
        got = (head, list(st.stream_info.response_headers.items()), st._chunked, st._close, st._no_body)
        assert got == want, (resp, sht, always_rid, kwargs, end_stream)
        assert st.stream_info.response_code == (int(want[0][9:12]))
        assert headers.items() == resp  # the caller's map is left as it was


def test_a_status_that_is_not_a_number_still_fails_the_same_way():
    cfg = _Cfg(0, False, 0)
    kwargs = dict(
        method="GET", version="1.1", keep_alive=True, upgrade=False,
        request_complete=True, close=False, draining=False, requests=1,
    )  # fmt: skip
    with pytest.raises(ValueError):
        oracle(_stream(cfg, **kwargs), Headers([(":status", "abc")]), False)
    with pytest.raises(ValueError):
        _stream(cfg, **kwargs)._write_headers(Headers([(":status", "abc")]), False)


PAIRS = [
    (("x-envoy-peer-metadata-id", "sidecar~1"), ("x-envoy-peer-metadata", "Q2hB")),
    (("x-a", "new"),),
    (("server", "mine"), ("x-a", "one"), ("x-a", "two")),
]


@pytest.mark.parametrize("resp", RESPONSES, ids=range(len(RESPONSES)))
def test_response_headers_to_set_are_set_on_the_head_as_headers_set_would(resp, monkeypatch):
    """A request hook's response_headers_to_set (istio.metadata_exchange's answer to a caller) lands on
    the wire and in the access log's response headers exactly as Headers.set on the response would,
    whatever the response already carries."""
    monkeypatch.setattr(m, "http_date", lambda: "Sat, 28 Nov 2026 01:00:00 GMT")
    kwargs = dict(
        method="GET", version="1.1", keep_alive=True, upgrade=False,
        request_complete=True, close=False, draining=False, requests=1,
    )  # fmt: skip
    for pairs in PAIRS:
        for sht in (0, 1, 2):
            cfg = _Cfg(sht, False, 0)
            expected = Headers.from_lowercase(list(resp))
            for name, value in pairs:
                expected.set(name, value)
            want = oracle(_stream(cfg, **kwargs), expected, True)
            st = _stream(cfg, **kwargs)
            st.response_headers_to_set = pairs
            headers = Headers.from_lowercase(list(resp))
            st._write_headers(headers, True)
            got = (st.hcm.conn.out[0], list(st.stream_info.response_headers.items()), st._chunked)
            assert got == want[:3], (resp, pairs, sht)
            assert headers.items() == resp
