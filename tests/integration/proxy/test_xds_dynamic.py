"""A real proxy process driven live by a real xDS control plane (tests/support/xds_server.py): LDS,
CDS, RDS and EDS pushes show up in traffic; bad resources are NACKed with error_detail while traffic
stays on the old config; /config_dump shows the dynamic resources."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from proxy.xds import api
from tests.integration.proxy.harness import start_upstream
from tests.integration.proxy.xds_support import (
    FAULT,
    admin_json,
    cla,
    eds_cluster,
    get,
    http_listener,
    routes,
    start_xds_proxy,
    stat,
    static,
    tcp_listener,
    tcp_upstream_of,
    upstream_of,
    wait_until,
)
from tests.support.net import free_port


@pytest.fixture
def upstreams(procs):
    return {name: start_upstream(procs, name) for name in ("A", "B")}


def nack_for(xds, type_url: str, *needles: str) -> str:
    """The error_detail of a NACK for `type_url` whose message names all of `needles`."""
    rec = xds.wait_for_request(
        lambda r: (
            r.type_url == type_url and r.is_nack and all(n in r.message.error_detail.message for n in needles)
        )
    )
    return rec.message.error_detail.message


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_lds_cds_rds_eds_pushes_take_effect(procs, xds, upstreams, tmp_path, delta):
    port = free_port()
    log = tmp_path / "access.log"
    xds.set_resources(api.CLUSTER, [static("a", upstreams["A"])])
    xds.set_resources(api.LISTENER, [http_listener("ingress", port, "main", access_log=str(log))])
    xds.set_resources(api.ROUTE, [routes("main", ("/", "a"))])
    proxy = start_xds_proxy(procs, xds.port, port, delta=delta)
    assert upstream_of(port) == "A"

    # RDS: a new route, to a cluster nobody defined yet: accepted, and 503 NC at request time.
    xds.set_resources(api.ROUTE, [routes("main", ("/b", "b"), ("/", "a"))])
    wait_until(lambda: get(port, "/b")[0] == 503)
    wait_until(lambda: "503 NC" in Path(log).read_text())  # the access log is flushed periodically
    assert stat(proxy, "http.ingress.rds.main.update_success") >= 2
    assert upstream_of(port, "/") == "A"

    # CDS + EDS: the cluster appears (an EDS cluster, warming until its endpoints come).
    xds.set_resources(api.CLUSTER, [static("a", upstreams["A"]), eds_cluster("b", "b-svc")])
    xds.set_resources(api.ENDPOINT, [cla("b-svc", upstreams["B"])])
    wait_until(lambda: upstream_of(port, "/b") == "B")

    # EDS: an endpoint change moves the traffic.
    xds.set_resources(api.ENDPOINT, [cla("b-svc", upstreams["A"])])
    wait_until(lambda: upstream_of(port, "/b") == "A")
    assert stat(proxy, "cluster.b.update_success") >= 2

    # LDS: a second listener appears; removing it closes its port.
    port2 = free_port()
    xds.set_resources(
        api.LISTENER,
        [http_listener("ingress", port, "main", access_log=str(log)), http_listener("second", port2, "main")],
    )
    wait_until(lambda: _accepts(port2))
    assert upstream_of(port2, "/") == "A"
    xds.set_resources(api.LISTENER, [http_listener("ingress", port, "main", access_log=str(log))])
    wait_until(lambda: not _accepts(port2))
    assert upstream_of(port) == "A"

    # CDS removal: requests to it get 503 NC again.
    xds.set_resources(api.CLUSTER, [static("a", upstreams["A"])])
    wait_until(lambda: get(port, "/b")[0] == 503)

    # /config_dump shows the dynamic resources with their versions.
    dump = admin_json(proxy, "/config_dump?include_eds")
    by_type = {c["@type"].rsplit(".", 1)[-1]: c for c in dump["configs"]}
    clusters = by_type["ClustersConfigDump"]
    assert [c["cluster"]["name"] for c in clusters["dynamic_active_clusters"]] == ["a"]
    assert clusters["dynamic_active_clusters"][0]["version_info"] and clusters["version_info"]
    assert [c["cluster"]["name"] for c in clusters["static_clusters"]] == ["xds-grpc"]
    listeners = by_type["ListenersConfigDump"]["dynamic_listeners"]
    active = [li for li in listeners if "active_state" in li]
    assert [li["name"] for li in active] == ["ingress"]
    assert active[0]["active_state"]["version_info"] and active[0]["active_state"]["last_updated"]
    rds = by_type["RoutesConfigDump"]["dynamic_route_configs"]
    assert [r["route_config"]["name"] for r in rds] == ["main"] and rds[0]["version_info"]
    assert "EndpointsConfigDump" in by_type
    assert "EndpointsConfigDump" not in {
        c["@type"].rsplit(".", 1)[-1] for c in admin_json(proxy, "/config_dump")["configs"]
    }


def test_eds_endpoints_show_in_config_dump_with_include_eds(procs, xds, upstreams):
    port = free_port()
    xds.set_resources(api.CLUSTER, [eds_cluster("svc")])
    xds.set_resources(api.ENDPOINT, [cla("svc", upstreams["A"], upstreams["B"])])
    xds.set_resources(api.LISTENER, [http_listener("ingress", port, "main")])
    xds.set_resources(api.ROUTE, [routes("main", ("/", "svc"))])
    proxy = start_xds_proxy(procs, xds.port, port)
    assert {upstream_of(port) for _ in range(4)} == {"A", "B"}
    dump = admin_json(proxy, "/config_dump?include_eds")
    eds = next(c for c in dump["configs"] if c["@type"].endswith("EndpointsConfigDump"))
    (dyn,) = eds["dynamic_endpoint_configs"]
    assert dyn["endpoint_config"]["cluster_name"] == "svc" and dyn["version_info"]
    ports = {
        e["endpoint"]["address"]["socket_address"]["port_value"]
        for e in dyn["endpoint_config"]["endpoints"][0]["lb_endpoints"]
    }
    assert ports == {upstreams["A"], upstreams["B"]}


def test_bad_resources_are_nacked_and_traffic_stays_on_the_old_config(procs, xds, upstreams):
    port = free_port()
    xds.set_resources(api.CLUSTER, [static("a", upstreams["A"])])
    xds.set_resources(api.LISTENER, [http_listener("ingress", port, "main")])
    xds.set_resources(api.ROUTE, [routes("main", ("/", "a"))])
    proxy = start_xds_proxy(procs, xds.port, port)
    assert upstream_of(port) == "A"

    # An HTTP filter chain whose last filter is not the router.
    xds.set_resources(api.LISTENER, [http_listener("ingress", port, "main", http_filters=[FAULT])])
    nack_for(
        xds, api.LISTENER, "ingress: ", "http_filters[0]", "non-terminal filter 'envoy.filters.http.fault'"
    )
    assert upstream_of(port) == "A"

    # A cluster with an invalid lb_policy: conflicting with its type, then out of the enum's range.
    bad = static("a", upstreams["B"])
    bad.lb_policy = bad.CLUSTER_PROVIDED
    xds.set_resources(api.CLUSTER, [bad])
    nack_for(xds, api.CLUSTER, "a: ", "CLUSTER_PROVIDED is not valid")
    bad.lb_policy = 99
    xds.set_resources(api.CLUSTER, [bad])
    nack_for(xds, api.CLUSTER, "a: ", "lb_policy 99 is not supported")
    assert upstream_of(port) == "A"

    # A listener whose port is already taken (by another process's socket).
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        taken = busy.getsockname()[1]
        xds.set_resources(
            api.LISTENER, [http_listener("ingress", port, "main"), http_listener("other", taken, "main")]
        )
        nack_for(xds, api.LISTENER, "other: ", "in use")
    finally:
        busy.close()
    assert upstream_of(port) == "A"
    assert stat(proxy, "listener_manager.lds.update_rejected") >= 2
    assert stat(proxy, "cluster_manager.cds.update_rejected") >= 2

    # A good update after the NACKs is applied and ACKed.
    xds.set_resources(api.CLUSTER, [static("a", upstreams["B"])])
    wait_until(lambda: upstream_of(port) == "B")


def test_tcp_proxy_listener_follows_its_cluster(procs, xds, upstreams):
    port = free_port()
    xds.set_resources(api.CLUSTER, [static("a", upstreams["A"]), static("b", upstreams["B"])])
    xds.set_resources(api.LISTENER, [tcp_listener("tcp", port, "a")])
    proxy = start_xds_proxy(procs, xds.port, port)
    assert tcp_upstream_of(port) == "A"
    # A connection open across the change is left to finish on the old listener.
    held = socket.create_connection(("127.0.0.1", port), timeout=5)
    xds.set_resources(api.LISTENER, [tcp_listener("tcp", port, "b")])
    wait_until(lambda: tcp_upstream_of(port) == "B")
    held.sendall(b"GET /held HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    data = b""
    while chunk := held.recv(65536):
        data += chunk
    held.close()
    assert data.startswith(b"HTTP/1.1 200") and b'"upstream": "A"' in data
    # Endpoint change of the cluster behind it (CDS) is followed too.
    xds.set_resources(api.CLUSTER, [static("a", upstreams["A"]), static("b", upstreams["A"])])
    wait_until(lambda: tcp_upstream_of(port) == "A")
    assert stat(proxy, "listener_manager.listener_modified") >= 1


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False
