"""The connection manager's synchronous request hook (``decode_headers_sync``) against the async-only
chain as the oracle: the same filter behaviours written once as ``on_request_headers`` coroutines and
once as synchronous hooks (returning a status, or an awaitable when they wait), mixed at random in
chains of one to four filters. The client must see the same thing either way: the responses on the
wire, which hooks ran in which order, which filters saw the response, on_destroy, the route each
filter saw (per-route config, clear_route_cache) and the access log's code, flags and details."""

from __future__ import annotations

import asyncio
import random

import pytest

from proxy.core.headers import Headers
from proxy.filters.http.base import CONTINUE, STOP, FilterStatus, HttpFilter, sync_request_hook
from tests.unit.proxy.filters.network.test_http_connection_manager import make, ok_handler, settle

MODES = (
    "continue",  # nothing to do
    "add_header",  # edits the request, continues
    "wait_continue",  # waits on the loop, then continues (the sync hook returns an awaitable)
    "reply_stop",  # answers locally (403) and stops
    "reply_now_continue",  # answers with local_reply_now and (wrongly) continues: the chain must stop
    "wait_reply_stop",  # waits, then answers locally and stops
    "reroute",  # changes a routing header and clears the route cache
    "per_route_off",  # the route's per-filter config disables it; else it adds a header
    "raise",  # a bug in the filter: 500 filter_chain_exception
    "stop_then_reply_later",  # stops iteration and answers from a timer callback
    "response_header",  # has a response hook that adds a header
)


class Route:
    def __init__(self, name: str, per_filter: dict) -> None:
        self.name = name
        self.per_filter_config = per_filter


class HeaderTable:
    """Routes on x-target: a, b or (none) no route."""

    def __init__(self) -> None:
        self.routes = {"a": Route("route-a", {"off": True}), "b": Route("route-b", {})}

    def match(self, headers, random_value):
        return self.routes.get(headers.get("x-target") or "")


class _Behaviour:
    """The behaviour of filter number ``idx`` in ``mode``; events go to the shared ``log``."""

    __slots__ = ("idx", "mode", "log")

    def _tag(self, what: str) -> str:
        return f"{self.idx}:{self.mode}:{what}"

    def _sync_part(self, stream):
        """The request hook's synchronous part: a status, or a coroutine function to await."""
        self.log.append(self._tag(f"req route={getattr(stream.route, 'name', None)}"))
        mode = self.mode
        if mode == "continue":
            return CONTINUE
        if mode == "add_header":
            stream.request_headers.add("x-seen", str(self.idx))
            return CONTINUE
        if mode == "wait_continue":
            return self._wait_continue
        if mode == "reply_stop":
            return self._reply_stop
        if mode == "reply_now_continue":
            stream.local_reply_now(429, "slow down", None, "filter_reply_now")
            return CONTINUE
        if mode == "wait_reply_stop":
            return self._wait_reply_stop
        if mode == "reroute":
            stream.request_headers.set("x-target", "b")
            stream.clear_route_cache()
            return CONTINUE
        if mode == "per_route_off":
            route = stream.route
            if route is not None and route.per_filter_config.get("off"):
                return CONTINUE
            stream.request_headers.add("x-per-route", "on")
            return CONTINUE
        if mode == "raise":
            raise RuntimeError("filter bug")
        if mode == "stop_then_reply_later":
            loop = asyncio.get_running_loop()
            loop.call_soon(lambda: stream.local_reply_now(503, "later", "UO", "filter_later"))
            return STOP
        if mode == "response_header":
            return CONTINUE
        raise AssertionError(mode)

    async def _wait_continue(self, stream) -> FilterStatus:
        await asyncio.sleep(0)
        self.log.append(self._tag("waited"))
        return CONTINUE

    async def _reply_stop(self, stream) -> FilterStatus:
        await stream.send_local_reply(403, b"denied", flag="UAEX", details="filter_denied")
        return STOP

    async def _wait_reply_stop(self, stream) -> FilterStatus:
        await asyncio.sleep(0)
        await stream.send_local_reply(401, b"who", flag="UAEX", details="filter_wait_denied")
        return STOP

    async def on_response_headers(self, stream, headers, end_stream: bool) -> FilterStatus:
        self.log.append(self._tag(f"resp {headers.get(':status')}"))
        if self.mode == "response_header":
            headers.add("x-resp", str(self.idx))
        return CONTINUE

    def on_destroy(self) -> None:
        self.log.append(self._tag("destroy"))


class AsyncFilter(_Behaviour, HttpFilter):
    __slots__ = ()

    async def on_request_headers(self, stream, end_stream: bool) -> FilterStatus:
        part = self._sync_part(stream)
        if part.__class__ is FilterStatus:
            return part
        return await part(stream)


class SyncFilter(_Behaviour, HttpFilter):
    __slots__ = ()

    def decode_headers_sync(self, stream, end_stream: bool):
        part = self._sync_part(stream)
        if part.__class__ is FilterStatus:
            return part
        return part(stream)

    on_request_headers = sync_request_hook


class Factory:
    def __init__(self, cls, idx: int, mode: str, log: list) -> None:
        self.cls, self.idx, self.mode, self.log = cls, idx, mode, log

    def create(self):
        f = self.cls()
        f.idx, f.mode, f.log = self.idx, self.mode, self.log
        return f


def _outcome(chain: list[tuple[str, bool]], requests: bytes):
    """Run the chain ([(mode, sync?)]) for the pipelined ``requests``; what a user can observe."""

    async def main():
        log: list[str] = []

        async def handler(stream, end_stream):
            log.append(
                f"router route={getattr(stream.route, 'name', None)} seen={stream.request_headers.get_all('x-seen')}"
            )
            await ok_handler(stream, end_stream)

        filters = [
            (f"f{i}", Factory(SyncFilter if sync else AsyncFilter, i, mode, log))
            for i, (mode, sync) in enumerate(chain)
        ]
        hcm, conn, store, logger, tf = make(handler, route_table=HeaderTable(), filters=filters)
        n = requests.count(b"HTTP/1.1\r\n")
        hcm.on_data(requests)
        await settle(lambda: len(logger.infos) == n or conn.closed, timeout=5.0)
        await settle()
        responses = [
            (h.status, [(k, v) for k, v in h.headers.items() if k != "date"], body)
            for h, body in conn.responses()
        ]
        infos = [
            (i.response_code, sorted(i.response_flags), i.response_code_details, i.route_name)
            for i in logger.infos
        ]
        counters = {k: c.value for k, c in store.counters.items()}
        return responses, log, infos, conn.closed, counters, len(tf.destroyed)

    return asyncio.run(main())


REQUESTS = (
    b"GET /1 HTTP/1.1\r\nHost: a\r\nx-target: a\r\n\r\n"
    b"GET /2 HTTP/1.1\r\nHost: a\r\nx-target: b\r\n\r\n"
    b"GET /3 HTTP/1.1\r\nHost: a\r\n\r\n"
)


def test_sync_hooks_mixed_with_async_ones_behave_as_the_async_only_chain():
    rng = random.Random(7)
    chains = [[(m, False)] for m in MODES]  # every mode alone, first
    chains += [[(rng.choice(MODES), False) for _ in range(rng.randint(1, 4))] for _ in range(120)]
    for chain in chains:
        modes = [m for m, _ in chain]
        oracle = _outcome(chain, REQUESTS)
        variants = [[(m, True) for m in modes]]
        variants += [[(m, rng.random() < 0.5) for m in modes] for _ in range(2)]
        for variant in variants:
            got = _outcome(variant, REQUESTS)
            assert got == oracle, (variant, got, oracle)


def test_the_sync_hook_is_called_without_awaiting_on_request_headers():
    calls = []

    class Probe(HttpFilter):
        __slots__ = ()

        def decode_headers_sync(self, stream, end_stream):
            calls.append(("sync", stream.route.name))
            stream.request_headers.add("x-seen", "probe")
            return CONTINUE

        async def on_request_headers(self, stream, end_stream):
            raise AssertionError("the connection manager awaited the async hook")

    class ProbeFactory:
        def create(self):
            return Probe()

    async def main():
        hcm, conn, store, logger, tf = make(filters=[("probe", ProbeFactory())])
        hcm.on_data(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        await settle(lambda: logger.infos)
        return conn.responses()

    [(head, body)] = asyncio.run(main())
    assert head.status == 200 and body == b"echo:"
    assert calls == [("sync", "r1")]


@pytest.mark.parametrize("mode", MODES)
def test_sync_request_hook_awaits_as_the_filter_would(mode):
    """``on_request_headers`` of a sync filter (sync_request_hook) gives what the async twin gives."""

    async def run(cls):
        log: list[str] = []
        stream_headers = Headers([(":method", "GET"), (":path", "/"), ("x-target", "a")])

        class Stream:
            request_headers = stream_headers
            route = HeaderTable().routes["a"]

            def clear_route_cache(self):
                log.append("clear")

            def local_reply_now(self, *a):
                log.append(("now", a))

            async def send_local_reply(self, *a, **kw):
                log.append(("reply", a, sorted(kw.items())))

        f = cls()
        f.idx, f.mode, f.log = 0, mode, log
        try:
            status = await f.on_request_headers(Stream(), True)
        except RuntimeError as e:
            status = str(e)
        await asyncio.sleep(0)
        return status, log, stream_headers.items()

    assert asyncio.run(run(SyncFilter)) == asyncio.run(run(AsyncFilter))
