"""istio.metadata_exchange's synchronous request hook and its factory-made filter classes, against
``PeerMetadataFilter(cfg).on_request_headers`` (the async hook) as the oracle: the same request and
response headers, filter_state, response_headers_to_set and response hook, for every config shape,
request and route."""

from __future__ import annotations

import asyncio
import functools
import itertools

from proxy.filters.http.base import CONTINUE, HttpFilter
from proxy.filters.http.peer_metadata import PeerMetadataFilter, PeerMetadataFilterFactory
from proxy.filters.http.peer_metadata.exchange import PEER_METADATA_HEADER, PEER_METADATA_ID_HEADER, encode
from tests.unit.proxy.filters.http.fakes import FakeStream
from tests.unit.proxy.filters.http.test_peer_metadata import (
    CALLER,
    CALLER_ID,
    INBOUND,
    OUTBOUND,
    config,
    req,
    resp,
    route_to,
)

BOTH = {**INBOUND, **OUTBOUND}
NONE: dict = {}
REQUESTS = (
    (),
    ((PEER_METADATA_ID_HEADER, CALLER_ID),),
    ((PEER_METADATA_HEADER, encode(CALLER)),),
    ((PEER_METADATA_HEADER, encode(CALLER)), (PEER_METADATA_ID_HEADER, CALLER_ID)),
    ((PEER_METADATA_HEADER, "%%%bad"), ("x-app", "1")),
)
RESPONSES = ((), ((PEER_METADATA_HEADER, encode(CALLER)), (PEER_METADATA_ID_HEADER, "callee")))


def _observe(make_filter, use_sync: bool, extra_req, extra_resp, route, before):
    stream = FakeStream(req(*extra_req), route)
    stream.response_headers_to_set = before
    f = make_filter()
    if use_sync:
        status = f.decode_headers_sync(stream, True)
    else:
        status = asyncio.run(f.on_request_headers(stream, True))
    assert status is CONTINUE
    has_hook = type(f).on_response_headers is not HttpFilter.on_response_headers
    response = resp(*extra_resp)
    if has_hook:
        assert asyncio.run(f.on_response_headers(stream, response, True)) is CONTINUE
    stream.apply_response_headers_to_set(response)
    return (
        status,
        has_hook,
        stream.request_headers.items(),
        response.items(),
        dict(stream.stream_info.filter_state),
        stream.response_headers_to_set,
    )


def test_factory_filters_and_the_sync_hook_match_the_async_hook():
    cases = 0
    for shape in (INBOUND, OUTBOUND, BOTH, NONE):
        cfg = config(shape)
        factory = PeerMetadataFilterFactory(cfg)
        for extra_req, extra_resp, route, before in itertools.product(
            REQUESTS,
            RESPONSES,
            (route_to("app"), route_to("PassthroughCluster"), None),
            (None, (("x-o", "1"),)),
        ):
            oracle = _observe(
                functools.partial(PeerMetadataFilter, cfg), False, extra_req, extra_resp, route, before
            )
            for make_filter, use_sync in ((factory.create, True), (factory.create, False)):
                got = _observe(make_filter, use_sync, extra_req, extra_resp, route, before)
                assert got == oracle, (shape, extra_req, extra_resp, route, before)
                cases += 1
    assert cases == 4 * 5 * 2 * 3 * 2 * 2


def test_a_factory_filter_reuses_its_configs_classes():
    cfg = config(INBOUND)
    factory = PeerMetadataFilterFactory(cfg)
    a, b = factory.create(), factory.create()
    assert a.config is cfg and b.config is cfg and type(a) is type(b)
    # inbound (no upstream discovery): request-only from the start, and stays so with the hook run
    assert type(a).on_response_headers is HttpFilter.on_response_headers
    a.decode_headers_sync(FakeStream(req(), route_to("app")), True)
    assert type(a) is type(b) and a.config is cfg
    out_cfg = config(OUTBOUND)
    outbound = PeerMetadataFilterFactory(out_cfg).create()
    assert outbound.config is out_cfg
    assert type(outbound).on_response_headers is not HttpFilter.on_response_headers
    outbound.decode_headers_sync(FakeStream(req(), route_to("app")), True)
    assert type(outbound).on_response_headers is not HttpFilter.on_response_headers  # reads the response
    none_cfg = config(NONE)
    quiet = PeerMetadataFilterFactory(none_cfg).create()
    assert type(quiet).on_response_headers is HttpFilter.on_response_headers and quiet.config is none_cfg
