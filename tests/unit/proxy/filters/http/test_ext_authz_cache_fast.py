"""The check cache's hit path reads only the referenced attributes off the stream: for every attribute
name it keys exactly as the full flat view does, so results stored from a check are found again (and
a different value misses), including repeated headers, context extensions, TLS principals, unknown
names and the full key."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from proxy.filters.http.ext_authz.attributes import flatten, getter
from proxy.filters.http.ext_authz.cache import CheckCache, Validity
from tests.unit.proxy.filters.http.fakes import FakeStream, request

TLS = SimpleNamespace(
    peer_principal="spiffe://cluster.local/ns/default/sa/sleep", local_principal="spiffe://x"
)


def stream(**extra) -> FakeStream:
    h = request("/p?q=1", end_user="jason", x_request_id="r-1")
    for k, v in extra.items():
        h.add(k.replace("_", "-"), v)
    s = FakeStream(h, None)
    s.connection = SimpleNamespace(
        remote_address=("10.0.0.9", 4242), local_address=("10.0.0.2", 9080), ssl=TLS
    )
    return s


NAMES = [
    "source.ip",
    "source.port",
    "source.principal",
    "destination.ip",
    "destination.port",
    "destination.principal",
    "request.method",
    "request.path",
    "request.host",
    "request.scheme",
    "request.protocol",
    "request.id",
    "request.headers.end-user",
    "request.headers.cookie",  # repeated: joined with ","
    "request.headers.absent",
    "context_extensions.team",
    "context_extensions.absent",
    "no.such.attribute",
]


@pytest.mark.parametrize("name", NAMES)
def test_getter_equals_the_flat_view(name):
    s = stream(cookie="a=1")
    s.request_headers.add("cookie", "b=2")
    ext = {"team": "books"}
    assert getter(name)(s, ext) == flatten(s, ext).get(name)


@pytest.mark.parametrize("refs", [("source.principal",), ("request.path", "request.headers.end-user"), None])
def test_stored_from_a_check_found_by_the_stream_and_not_for_another_value(refs):
    cache = CheckCache()
    s = stream()
    cache.store(flatten(s, {}), "allow", Validity(duration=60, use_count=None, referenced=refs))
    assert cache.lookup_stream(stream(), {}) == "allow"
    other = stream()
    other.request_headers.set("end-user", "mallory")
    other.request_headers.set(":path", "/other")
    other.connection.ssl = SimpleNamespace(peer_principal="spiffe://other", local_principal="spiffe://x")
    assert cache.lookup_stream(other, {}) is None
    assert cache.lookup(flatten(other, {})) is None


def test_use_count_and_expiry_hold_on_the_stream_path():
    now = [0.0]
    cache = CheckCache(clock=lambda: now[0])
    cache.store(
        flatten(stream(), {}), "allow", Validity(duration=None, use_count=3, referenced=("source.ip",))
    )
    assert [cache.lookup_stream(stream(), {}) for _ in range(3)] == ["allow", "allow", None]
    cache.store(
        flatten(stream(), {}), "deny", Validity(duration=5, use_count=None, referenced=("source.ip",))
    )
    assert cache.lookup_stream(stream(), {}) == "deny"
    now[0] = 5.0
    assert cache.lookup_stream(stream(), {}) is None
