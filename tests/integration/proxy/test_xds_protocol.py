"""The ADS client against a real xDS control plane (tests/support/xds_server.py) over real gRPC.

The handlers here are small fakes that keep the resources they were given, as the proxy's handlers do;
what is asserted is what a control plane operator sees: ACKs and NACKs with the right version and
nonce, error_detail naming the bad resource, resubscription after the control plane comes back, and
how much a Delta stream transfers.
"""

from __future__ import annotations

import asyncio
import json
import signal

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from google.protobuf import duration_pb2

from proxy.xds import api
from proxy.xds.backoff import JitteredBackoff
from proxy.xds.client import XdsClient
from proxy.xds.config import AdsConfig
from tests.support.net import free_port, wait_for_port
from tests.support.xds_server import XdsServer

NODE = base_pb2.Node(
    id="sidecar~127.0.0.1~productpage.default~default.svc.cluster.local", cluster="productpage"
)


class Handler:
    """Keeps what it was given; rejects resources whose name starts with "bad"."""

    def __init__(self, type_url: str, wildcard: bool, delay: float = 0.0) -> None:
        self.type_url = type_url
        self.wildcard = wildcard
        self.state: dict[str, object] = {}
        self.versions: list[str] = []
        self.delay = delay
        self.in_flight = 0
        self.max_in_flight = 0
        self.fetch_timeouts = 0
        self.changed = asyncio.Event()

    async def on_update(self, update: api.ResourceUpdate) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            bad = {n: "lb_policy is invalid" for n in update.resources if n.startswith("bad")}
            if bad:
                raise api.UpdateRejected(bad)
            if update.delta:
                for name in update.removed:
                    self.state.pop(name, None)
                self.state.update(update.resources)
            elif self.wildcard:
                self.state = dict(update.resources)
            else:
                self.state.update(update.resources)
            self.versions.append(update.version_info)
            self.changed.set()
        finally:
            self.in_flight -= 1

    def on_fetch_timeout(self) -> None:
        self.fetch_timeouts += 1
        self.changed.set()

    async def wait_until(self, predicate, timeout: float = 10.0) -> None:
        async def loop():
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(loop(), timeout)


def cluster(name: str, timeout_s: int = 1) -> cluster_pb2.Cluster:
    return cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        connect_timeout=duration_pb2.Duration(seconds=timeout_s),
    )


def cla(name: str, port: int) -> endpoint_pb2.ClusterLoadAssignment:
    msg = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    lb = msg.endpoints.add().lb_endpoints.add()
    lb.endpoint.address.socket_address.address = "127.0.0.1"
    lb.endpoint.address.socket_address.port_value = port
    return msg


@pytest.fixture
def server():
    srv = XdsServer().start()
    yield srv
    srv.stop()


@pytest.fixture
async def make_client():
    clients: list[XdsClient] = []

    def make(target: str, delta: bool, *handlers, **config) -> XdsClient:
        c = XdsClient(NODE, AdsConfig(delta=delta, cluster_name="xds-grpc", target=target, **config))
        for h in handlers:
            c.register(h)
        clients.append(c)
        return c

    yield make
    for c in clients:
        await c.stop()


def is_ack(type_url, nonce=None):
    return lambda r: (
        r.type_url == type_url
        and r.response_nonce
        and not r.is_nack
        and (nonce is None or r.response_nonce == nonce)
    )


def last_response(server: XdsServer, type_url: str):
    return [r for r in server.responses if r.type_url == type_url][-1]


async def test_sotw_ack_carries_the_response_version_and_nonce(server, make_client):
    server.set_resources(api.CLUSTER, [cluster("reviews"), cluster("ratings")])
    cds = Handler(api.CLUSTER, wildcard=True)
    client = make_client(server.address, False, cds)
    await client.start()

    first = await server.await_request(lambda r: r.type_url == api.CLUSTER)
    assert first.message.node.id == NODE.id and first.message.node.cluster == "productpage"
    assert list(first.message.resource_names) == []  # wildcard
    ack = await server.await_request(is_ack(api.CLUSTER))
    sent = last_response(server, api.CLUSTER)
    assert (
        (ack.version_info, ack.response_nonce)
        == (sent.message.version_info, sent.message.nonce)
        == ("1", ack.response_nonce)
    )
    assert set(cds.state) == {"reviews", "ratings"}
    assert client.stats.gauge("control_plane.connected_state").value == 1

    server.set_resources(api.CLUSTER, [cluster("reviews")])
    ack2 = await server.await_request(lambda r: is_ack(api.CLUSTER)(r) and r.version_info == "2")
    assert ack2.response_nonce == last_response(server, api.CLUSTER).message.nonce
    assert set(cds.state) == {"reviews"}  # SotW: absent from a CDS response means removed


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_bad_resource_is_nacked_with_detail_and_the_last_good_config_stays(server, make_client, delta):
    server.set_resources(api.CLUSTER, [cluster("reviews")])
    cds = Handler(api.CLUSTER, wildcard=True)
    client = make_client(server.address, delta, cds)
    await client.start()
    await server.await_request(is_ack(api.CLUSTER))

    server.set_resources(api.CLUSTER, [cluster("reviews"), cluster("bad-lb")])
    nack = await server.await_request(lambda r: r.type_url == api.CLUSTER and r.is_nack)
    rejected = last_response(server, api.CLUSTER)
    assert nack.response_nonce == rejected.message.nonce
    if not delta:
        assert nack.version_info == "1"  # the previous good version, not the rejected "2"
    detail = nack.message.error_detail
    assert detail.code == 3  # INVALID_ARGUMENT
    assert "bad-lb: lb_policy is invalid" in detail.message
    assert set(cds.state) == {"reviews"}

    server.set_resources(api.CLUSTER, [cluster("reviews"), cluster("details")])
    good = last_response(server, api.CLUSTER).message.nonce
    await server.await_request(is_ack(api.CLUSTER, good))
    assert set(cds.state) == {"reviews", "details"}


async def test_response_of_the_wrong_type_is_nacked_without_reaching_the_handler(server, make_client):
    # A "cluster" resource that is really a ClusterLoadAssignment: a control plane bug.
    cds = Handler(api.CLUSTER, wildcard=True)
    client = make_client(server.address, False, cds)
    server._resources[api.CLUSTER] = {"x": ("v", cla("x", 1))}  # bypass the server's type check
    server._versions[api.CLUSTER] = 1
    await client.start()
    nack = await server.await_request(lambda r: r.type_url == api.CLUSTER and r.is_nack)
    assert "resources[0]" in nack.message.error_detail.message
    assert "ClusterLoadAssignment" in nack.message.error_detail.message
    assert cds.versions == []


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_interest_changes_send_new_subscriptions(server, make_client, delta):
    server.set_resources(api.CLUSTER, [cluster("a"), cluster("b")])
    server.set_resources(api.ENDPOINT, [cla("a", 9001), cla("b", 9002)])
    eds = Handler(api.ENDPOINT, wildcard=False)
    client = make_client(server.address, delta, Handler(api.CLUSTER, True), eds)
    await client.start()
    await server.await_request(is_ack(api.CLUSTER))
    assert not [r for r in server.requests if r.type_url == api.ENDPOINT]  # no interest yet, no request

    client.set_interest(api.ENDPOINT, {"a"})
    await eds.wait_until(lambda: "a" in eds.state)
    client.set_interest(api.ENDPOINT, {"a", "b"})
    await eds.wait_until(lambda: "b" in eds.state)
    client.set_interest(api.ENDPOINT, {"b"})
    unsub = await server.await_request(
        lambda r: (
            r.type_url == api.ENDPOINT
            and (
                list(r.message.resource_names_unsubscribe) == ["a"]
                if delta
                else list(r.message.resource_names) == ["b"]
            )
        )
    )
    if delta:
        subs = [
            list(r.message.resource_names_subscribe) for r in server.requests if r.type_url == api.ENDPOINT
        ]
        assert ["a"] in subs and ["b"] in subs  # b added on its own, not the whole list again
    else:
        names = [list(r.message.resource_names) for r in server.requests if r.type_url == api.ENDPOINT]
        assert ["a"] in names and ["a", "b"] in names and names[-1] == ["b"]
    assert unsub.type_url == api.ENDPOINT

    # The server now only pushes b: a's change reaches nobody.
    server.set_resources(api.ENDPOINT, [cla("a", 9101), cla("b", 9102)])

    def port_of(name):
        return eds.state[name].endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value

    await eds.wait_until(lambda: port_of("b") == 9102)
    pushed = [r.name if delta else r for r in last_response(server, api.ENDPOINT).message.resources]
    assert len(pushed) == 1
    assert port_of("a") == 9001


async def test_delta_500_clusters_then_one_change_transfers_only_that_one(server, make_client):
    clusters = {
        f"outbound|9080||svc-{i:03d}.default.svc.cluster.local": cluster(
            f"outbound|9080||svc-{i:03d}.default.svc.cluster.local"
        )
        for i in range(500)
    }
    server.set_resources(api.CLUSTER, clusters)
    cds = Handler(api.CLUSTER, wildcard=True)
    client = make_client(server.address, True, cds)
    await client.start()
    await server.await_request(is_ack(api.CLUSTER))
    assert len(cds.state) == 500
    first = last_response(server, api.CLUSTER)
    assert first.resource_count == 500

    changed = "outbound|9080||svc-123.default.svc.cluster.local"
    clusters[changed] = cluster(changed, timeout_s=5)
    server.set_resources(api.CLUSTER, clusters)
    second = await asyncio.to_thread(
        server.wait_for_response, lambda r: r.type_url == api.CLUSTER and r is not first
    )
    await server.await_request(is_ack(api.CLUSTER, second.message.nonce))
    assert second.resource_count == 1
    assert second.message.resources[0].name == changed
    assert second.byte_size * 100 < first.byte_size
    assert cds.state[changed].connect_timeout.seconds == 5
    assert len(cds.state) == 500


async def test_batches_of_one_type_are_applied_one_at_a_time_in_order(server, make_client):
    server.set_resources(api.CLUSTER, [cluster("a")])
    cds = Handler(api.CLUSTER, wildcard=True, delay=0.05)
    client = make_client(server.address, False, cds)
    await client.start()
    await server.await_request(is_ack(api.CLUSTER))
    for i in range(5):
        server.set_resources(api.CLUSTER, [cluster("a"), cluster(f"c{i}")])
    await server.await_request(
        is_ack(api.CLUSTER) and (lambda r: r.type_url == api.CLUSTER and r.version_info == "6")
    )
    assert cds.max_in_flight == 1
    assert cds.versions == sorted(cds.versions, key=int) and cds.versions[-1] == "6"
    assert set(cds.state) == {"a", "c4"}


async def test_initial_fetch_timeout_lets_the_handler_stop_waiting(make_client):
    # Nothing listens: the control plane is unreachable from the start.
    cds = Handler(api.CLUSTER, wildcard=True)
    client = make_client(f"127.0.0.1:{free_port()}", False, cds, initial_fetch_timeouts={api.CLUSTER: 0.3})
    await client.start()
    await cds.wait_until(lambda: cds.fetch_timeouts == 1, timeout=5)
    assert client.connected is False
    assert client.stats.gauge("control_plane.connected_state").value == 0


# -- the control plane as a separate process, killed and restarted ---------------------------------
def write_resources(path, clusters: dict[str, int]) -> None:
    doc = {
        "resources": [
            {
                "@type": api.CLUSTER,
                "name": name,
                "type": "EDS",
                "connect_timeout": f"{timeout}s",
            }
            for name, timeout in clusters.items()
        ]
    }
    path.write_text(json.dumps(doc))


def start_server_process(procs, port: int, resources):
    proc = procs.python("-m", "tests.support.xds_server", "--port", str(port), "--resources", str(resources))
    wait_for_port("127.0.0.1", port, proc=proc)
    return proc


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_reconnects_after_the_control_plane_restarts_and_learns_removals(
    procs, tmp_path, make_client, delta
):
    port = free_port()
    before, after = tmp_path / "before.json", tmp_path / "after.json"
    write_resources(before, {"reviews": 1, "ratings": 1, "details": 1})
    write_resources(after, {"reviews": 2, "productpage": 1})  # ratings and details removed meanwhile
    proc = await asyncio.to_thread(start_server_process, procs, port, before)

    cds = Handler(api.CLUSTER, wildcard=True)
    client = make_client(f"127.0.0.1:{port}", delta, cds)
    client.backoff = JitteredBackoff(base=0.2, maximum=1.0)
    await client.start()
    await cds.wait_until(lambda: set(cds.state) == {"reviews", "ratings", "details"})
    assert client.connected

    proc.send_signal(signal.SIGKILL)
    await asyncio.to_thread(proc.wait, 10)
    deadline = asyncio.get_running_loop().time() + 10
    while client.connected:
        assert asyncio.get_running_loop().time() < deadline, "client never noticed the control plane died"
        await asyncio.sleep(0.02)
    assert client.stats.gauge("control_plane.connected_state").value == 0
    assert set(cds.state) == {"reviews", "ratings", "details"}  # last good config kept meanwhile

    await asyncio.to_thread(start_server_process, procs, port, after)
    await cds.wait_until(lambda: set(cds.state) == {"reviews", "productpage"}, timeout=15)
    assert cds.state["reviews"].connect_timeout.seconds == 2
    assert client.connected and client.stats.gauge("control_plane.connected_state").value == 1


def test_server_process_reports_a_bad_resources_file(procs, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"resources": [{"@type": api.CLUSTER, "name": "x", "lb_policy": "NOPE"}]}))
    proc = procs.python("-m", "tests.support.xds_server", "--port", str(free_port()), "--resources", str(bad))
    assert proc.wait(30) != 0
    assert "lb_policy" in procs.output(proc) or "NOPE" in procs.output(proc)


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_resync_after_restart_sends_what_the_client_has_and_acks_the_new_config(make_client, delta):
    first = XdsServer().start()
    port = first.port
    try:
        first.set_resources(api.CLUSTER, [cluster("reviews"), cluster("ratings")])
        cds = Handler(api.CLUSTER, wildcard=True)
        client = make_client(first.address, delta, cds)
        client.backoff = JitteredBackoff(base=0.1, maximum=0.5)
        await client.start()
        await first.await_request(is_ack(api.CLUSTER))
        known = {n: v for n, (v, _) in first._resources[api.CLUSTER].items()}
    finally:
        first.stop()

    second = XdsServer(port=port)
    second.set_resources(api.CLUSTER, [cluster("ratings")])
    second.set_resources(api.CLUSTER, [cluster("ratings"), cluster("details")])  # version "2"
    second.start()
    try:
        hello = await second.await_request(lambda r: r.type_url == api.CLUSTER, timeout=15)
        if delta:
            assert dict(hello.message.initial_resource_versions) == known
            assert list(hello.message.resource_names_subscribe) == ["*"]
        else:
            assert hello.version_info == "1" and hello.response_nonce == ""
        await cds.wait_until(lambda: set(cds.state) == {"ratings", "details"})
        sent = last_response(second, api.CLUSTER).message
        ack = await second.await_request(is_ack(api.CLUSTER, sent.nonce))
        if delta:
            assert sorted(r.name for r in sent.resources) == ["details"]  # ratings was unchanged
            assert list(sent.removed_resources) == ["reviews"]
        else:
            assert ack.version_info == "2"
    finally:
        second.stop()
