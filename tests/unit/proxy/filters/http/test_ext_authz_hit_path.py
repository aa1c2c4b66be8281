"""The ext_authz hit path against its references: the generated attribute expressions read exactly
what the flat view has (``flatten(...).get(name)``) for odd names and streams, ``lookup_stream``
decides as ``lookup(flatten(...))`` over long random store/lookup sequences (use counts, expiry, LRU,
several reference sets, the full key), and the filter keeps the response hook only for a decision
that adds response headers, counting hits, misses and decisions per connection manager exactly."""

from __future__ import annotations

import asyncio
import random
from types import SimpleNamespace

import pytest
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.service.auth.v3 import external_auth_pb2
from google.protobuf import json_format

from proxy.config.context import FactoryContext
from proxy.core.headers import Headers
from proxy.filters.http.base import CONTINUE, STOP, HttpFilter
from proxy.filters.http.ext_authz import ExtAuthzConfig, ExtAuthzFilterFactory
from proxy.filters.http.ext_authz.attributes import flatten, values_function
from proxy.filters.http.ext_authz.cache import FULL, CheckCache, Validity
from proxy.stats.store import Store
from tests.unit.proxy.filters.http.fakes import (
    FakeCluster,
    FakeClusterManager,
    FakeStream,
    request,
    route_for,
)

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
    "request.headers.cookie",
    "request.headers.absent",
    "request.headers.x-'quote\"",
    "request.headers.back\\slash\nnewline",
    "request.headers.ünï{côde}",
    "context_extensions.team",
    "context_extensions.'); import os #",
    "context_extensions.absent",
    "no.such.attribute",
    "",
]

TLS_FACTS = [
    None,
    SimpleNamespace(peer_principal="spiffe://a/sa/sleep", local_principal="spiffe://a/sa/me"),
    SimpleNamespace(peer_uri_sans=["spiffe://b"], local_uri_sans=[]),
    SimpleNamespace(info=None),  # a TLS transport before its handshake
    SimpleNamespace(info=SimpleNamespace(peer_uri_sans=("spiffe://c",), local_uri_sans=("spiffe://d",))),
]


def random_stream(rng: random.Random) -> tuple[FakeStream, dict]:
    h = request(rng.choice(["/", "/p?q=1", "/a"]), authority=rng.choice(["svc", "svc:80"]))
    for _ in range(rng.randrange(4)):
        h.add(rng.choice(["end-user", "cookie", "x-'quote\"", "ünï{côde}", "x-request-id"]), rng.choice("ab"))
    for pseudo in (":path", ":scheme", ":method"):
        if rng.random() < 0.1:
            h.remove(pseudo)  # absent: the flat view has ""
    s = FakeStream(h, None)
    conn = SimpleNamespace(ssl=rng.choice(TLS_FACTS))
    if rng.random() < 0.8:
        conn.remote_address = (rng.choice(["10.0.0.9", "127.0.0.1"]), rng.choice([4242, 1]))
    if rng.random() < 0.8:
        conn.local_address = ("10.0.0.2", 9080)
    if rng.random() < 0.2:
        del conn.ssl  # a connection object without the attribute at all
    s.connection = conn
    ext = rng.choice([{}, {"team": "books"}, {"team": "x", "'); import os #": "y"}])
    return s, ext


def random_refs(rng: random.Random) -> tuple[str, ...]:
    return tuple(sorted(set(rng.sample(NAMES, rng.randrange(0, 4)))))


def test_generated_values_are_the_flat_views():
    rng = random.Random(5)
    for _ in range(400):
        refs = random_refs(rng)
        values_of = values_function(refs)
        for _ in range(5):
            s, ext = random_stream(rng)
            flat = flatten(s, ext)
            assert values_of(s, ext) == tuple(flat.get(name) for name in refs), refs


@pytest.mark.parametrize("refs", [(), ("source.principal",), tuple(NAMES)])
def test_generated_values_edge_sets(refs):
    s, ext = random_stream(random.Random(1))
    assert values_function(refs)(s, ext) == tuple(flatten(s, ext).get(n) for n in refs)


def test_lookup_stream_decides_as_lookup_of_the_flat_view():
    """Two caches fed the same stores: one probed off the stream, one with the flat view."""
    rng = random.Random(9)
    for _ in range(30):
        now = [0.0]
        fast = CheckCache(max_entries=rng.choice([3, 50]), clock=lambda now=now: now[0])
        slow = CheckCache(max_entries=fast.max_entries, clock=lambda now=now: now[0])
        ref_sets = [random_refs(rng) for _ in range(3)] + [FULL, tuple(NAMES)]
        for step in range(200):
            s, ext = random_stream(rng)
            now[0] += rng.choice([0, 0, 0.4, 2.5])
            if rng.random() < 0.3:
                refs = rng.choice(ref_sets)
                validity = Validity(
                    duration=rng.choice([None, 1.0, 10.0]),
                    use_count=rng.choice([None, 1, 2, 3, 5]),
                    referenced=refs,
                )
                for cache in (fast, slow):
                    cache.store(flatten(s, ext), f"result-{step}", validity)
            else:
                assert fast.lookup_stream(s, ext) == slow.lookup(flatten(s, ext))
            assert len(fast) == len(slow)


# --- the filter --------------------------------------------------------------------------------------


class FakeAuthz:
    def __init__(self, responses):
        self.responses = list(responses)
        self.calls = 0

    def stub(self, cls):
        return self

    async def Check(self, req, timeout=None, metadata=None):
        self.calls += 1
        r = self.responses.pop(0)
        if isinstance(r, BaseException):
            raise r
        return r


def response(code=0, response_headers=(), **md):
    r = external_auth_pb2.CheckResponse()
    r.status.code = code
    if code:
        r.denied_response.status.code = 401
        r.denied_response.body = "nope"
    for name, value in response_headers:
        h = r.ok_response.response_headers_to_add.add()
        h.header.key, h.header.value = name, value
    if md:
        r.dynamic_metadata.update(md)
    return r


CACHED = {"valid_duration_ms": 60000, "referenced_attributes": ["request.headers.end-user"]}
ROUTES = {
    "virtual_hosts": [
        {"name": "vh", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "a"}}]}
    ]
}


def factory(responses, **cfg):
    store = Store()
    ctx = FactoryContext(stats=store, cluster_manager=FakeClusterManager(FakeCluster("mixer", store)))
    msg = json_format.ParseDict(
        {"grpc_service": {"envoy_grpc": {"cluster_name": "mixer"}}, **cfg}, ext_authz_pb2.ExtAuthz()
    )
    client = FakeAuthz(responses)
    return ExtAuthzFilterFactory(ExtAuthzConfig(msg, ctx, "f", client=client)), client, store


def through(fac, user="jason", hcm=None):
    """One request through a new filter of the factory; the response headers its hook produced."""
    h = request("/p", end_user=user)
    s = FakeStream(h, route_for(ROUTES, h))
    if hcm is not None:
        s.config = hcm
    f = fac.create()
    status = asyncio.run(f.on_request_headers(s, True))
    out = Headers([(":status", "200")])
    if type(f).on_response_headers is not HttpFilter.on_response_headers:
        asyncio.run(f.on_response_headers(s, out, True))
    return status, s, f, out


def counts(store, prefix="ingress"):
    names = ("ok", "denied", "error", "failure_mode_allowed", "cache_hit", "cache_miss")
    return {n: store.counter(f"http.{prefix}.ext_authz.{n}").value for n in names}


def test_a_decision_without_response_headers_leaves_no_response_hook_hit_or_miss():
    fac, client, store = factory([response(**CACHED)])
    for _ in range(3):
        status, _, f, _ = through(fac)
        assert status is CONTINUE
        assert type(f).on_response_headers is HttpFilter.on_response_headers  # single-write path kept
    assert client.calls == 1
    assert counts(store) == dict(ok=3, denied=0, error=0, failure_mode_allowed=0, cache_hit=2, cache_miss=1)


def test_response_headers_to_add_reach_the_response_on_a_miss_and_on_hits_only_for_that_stream():
    fac, client, _ = factory([response(response_headers=[("x-authz", "yes")], **CACHED), response(**CACHED)])
    for _ in range(3):  # a miss, then two hits of the same decision
        _, _, f, out = through(fac)
        assert out.get("x-authz") == "yes" and f.config is fac.config
    _, _, other, out = through(fac, user="other")  # another decision, no headers: no hook
    assert out.get("x-authz") is None
    assert type(other).on_response_headers is HttpFilter.on_response_headers
    assert type(fac.create()).on_response_headers is HttpFilter.on_response_headers  # new streams start plain
    assert client.calls == 2


def test_cached_denials_answer_uaex_and_errors_keep_their_failure_modes():
    fac, client, store = factory([response(code=7, **CACHED)])
    replies = [through(fac, user="evil")[1].local_reply[:3] for _ in range(3)]
    assert replies == [(401, b"nope", "UAEX")] * 3 and client.calls == 1
    assert counts(store)["denied"] == 3 and counts(store)["cache_hit"] == 2

    fac, _, store = factory([RuntimeError("down")] * 2, failure_mode_allow=True)
    assert [through(fac)[0] for _ in range(2)] == [CONTINUE, CONTINUE]
    assert counts(store) == dict(ok=0, denied=0, error=2, failure_mode_allowed=2, cache_hit=0, cache_miss=2)
    fac, _, _ = factory([RuntimeError("down")])
    status, s, _, _ = through(fac)
    assert status is STOP and s.local_reply[:3] == (403, b"", "UAEX")


def test_counts_go_to_each_connection_managers_prefix_exactly():
    """One filter config shared by two connection managers (their own stat prefixes), interleaved."""
    fac, _, store = factory([response(**CACHED)])
    inbound = SimpleNamespace(stat_prefix="inbound", buffer_limit=1 << 20)
    outbound = SimpleNamespace(stat_prefix="outbound", buffer_limit=1 << 20)
    for hcm in (inbound, outbound, outbound, inbound, inbound):
        through(fac, hcm=hcm)
    assert counts(store, "inbound") == dict(
        ok=3, denied=0, error=0, failure_mode_allowed=0, cache_hit=2, cache_miss=1
    )
    assert counts(store, "outbound")["cache_hit"] == 2 and counts(store, "outbound")["ok"] == 2


def test_use_counts_are_honoured_through_the_filter():
    md = {"valid_use_count": 3, "referenced_attributes": ["request.headers.end-user"]}
    fac, client, store = factory([response(**md), response(**md)])
    for _ in range(4):
        through(fac)
    # three uses per check (the check's own included): check, hit, hit, check
    assert client.calls == 2 and counts(store)["cache_hit"] == 2 and counts(store)["cache_miss"] == 2


def test_cached_ok_decisions_still_change_the_request_on_every_hit():
    r = response(**CACHED)
    r.ok_response.headers_to_remove.append("x-secret")
    h = r.ok_response.headers.add()
    h.header.key, h.header.value = "x-user-id", "42"
    fac, client, _ = factory([r])
    for _ in range(3):
        headers = request("/p", end_user="jason", x_secret="s")
        s = FakeStream(headers, route_for(ROUTES, headers))
        assert asyncio.run(fac.create().on_request_headers(s, True)) is CONTINUE
        assert "x-secret" not in s.request_headers and s.request_headers.get("x-user-id") == "42"
    assert client.calls == 1
