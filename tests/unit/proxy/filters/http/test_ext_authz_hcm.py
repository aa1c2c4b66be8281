"""ext_authz inside the real HTTP connection manager: a cached OK decision with nothing to add to the
response leaves the single-write response path (``encode_whole``) open, and a decision with
``response_headers_to_add`` puts its headers on the wire on a miss and on hits alike."""

from __future__ import annotations

from types import SimpleNamespace

from proxy.core.headers import Headers
from tests.unit.proxy.filters.http.test_ext_authz_hit_path import CACHED, factory, response
from tests.unit.proxy.filters.network.test_http_connection_manager import Table, make, settle


def route_table():
    return Table(SimpleNamespace(name="r1", per_filter_config={}))


async def run(responses, users):
    whole = []

    async def handler(stream, end_stream):
        head = Headers([(":status", "200"), ("content-length", "2")])
        done = stream.encode_whole(head, b"ok")
        whole.append(done)
        if not done:
            await stream.encode_headers(head, False)
            await stream.encode_data(b"ok", True)

    fac, client, store = factory(responses)
    hcm, conn, _, _, _ = make(handler, route_table(), filters=[("envoy.filters.http.ext_authz", fac)])
    for user in users:
        hcm.on_data(f"GET /p HTTP/1.1\r\nHost: svc\r\nend-user: {user}\r\n\r\n".encode())
        await settle(lambda n=len(whole) + 1: len(whole) == n)
    await settle(lambda: len(conn.responses()) == len(users))
    return conn.responses(), whole, client


async def test_plain_ok_decisions_keep_the_single_write_response():
    responses, whole, client = await run([response(**CACHED)], ["jason"] * 3)
    assert [h.status for h, _ in responses] == [200] * 3 and whole == [True] * 3
    assert client.calls == 1


async def test_response_headers_to_add_reach_the_wire_on_miss_and_hits_and_only_there():
    fac_responses = [response(response_headers=[("x-authz", "yes")], **CACHED), response(**CACHED)]
    responses, whole, client = await run(fac_responses, ["jason", "jason", "other", "jason"])
    got = [dict(h.headers).get("x-authz") for h, _ in responses]
    assert got == ["yes", "yes", None, "yes"] and whole == [False, False, True, False]
    assert client.calls == 2
