"""Idle proxy memory: RSS of an idle Isthmus sidecar with the Bookinfo config and with 1000 services.

The config is what pilot sends the productpage sidecar: pilot's own builders (the same pure functions
its xDS server runs) over the Bookinfo services with Istio's destination-rule-all.yaml and
virtual-service-all-v1.yaml, or over 1000 generated services. The resources go into a static
bootstrap (routes inlined into their HTTP connection managers, endpoints into their clusters, the
listeners on free loopback ports), so no control plane runs beside the measurement.
"""

from __future__ import annotations

import json
import tempfile
import time

from google.protobuf import json_format

from bench.common import REPO, process, rss_mb
from tests.support.net import free_port, wait_for_port

HCM_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)


def _push(n_services: int):
    from pilot.model.config import ConfigSnapshot
    from pilot.model.push_context import MeshConfig, PushContext
    from pilot.model.service import Endpoint, Port, RegistrySnapshot, Service
    from tests.unit.pilot.networking import bookinfo

    if n_services == 0:  # Bookinfo itself
        return bookinfo.push("destination-rule-all.yaml", "virtual-service-all-v1.yaml")
    http = (Port("http", 9080, "HTTP"),)
    services, endpoints = [], []
    for i in range(n_services):
        name = f"svc{i}"
        services.append(Service(bookinfo.fqdn(name), bookinfo.NS, http))
        ip = f"127.1.{i // 250}.{i % 250 + 1}"
        endpoints.append(
            Endpoint(
                bookinfo.fqdn(name),
                9080,
                ip,
                9080,
                labels={"app": name, "version": "v1"},
                service_account=name,
                workload_name=f"{name}-v1",
                namespace=bookinfo.NS,
            )
        )
    services.append(Service(bookinfo.fqdn("productpage"), bookinfo.NS, http))
    registry = RegistrySnapshot(tuple(services), tuple(endpoints), 1)
    return PushContext(ConfigSnapshot({}, 1), registry, MeshConfig(), "1")


def sidecar_bootstrap(n_services: int, admin_port: int) -> dict:
    """A static Bootstrap holding what pilot generates for the productpage sidecar."""
    from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2

    from pilot.networking import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, generate
    from tests.unit.pilot.networking import bookinfo

    push = _push(n_services)
    proxy = bookinfo.sidecar("productpage", "v1", "127.0.0.10")
    routes = {r.name: r for r in generate(ROUTE_TYPE, proxy, push)}
    assignments = {a.cluster_name: a for a in generate(ENDPOINT_TYPE, proxy, push)}
    listeners = []
    for lst in generate(LISTENER_TYPE, proxy, push):
        if lst.address.socket_address.port_value and not (
            lst.HasField("bind_to_port") and not lst.bind_to_port.value
        ):
            lst.address.socket_address.address = "127.0.0.1"
            lst.address.socket_address.port_value = free_port()
        for chain in lst.filter_chains:
            for f in chain.filters:
                if f.typed_config.type_url != HCM_TYPE:
                    continue
                hcm = http_connection_manager_pb2.HttpConnectionManager()
                f.typed_config.Unpack(hcm)
                if hcm.HasField("rds"):
                    rc = routes.get(hcm.rds.route_config_name)
                    hcm.ClearField("rds")
                    if rc is not None:
                        hcm.route_config.CopyFrom(rc)
                    else:
                        hcm.route_config.name = "empty"
                f.typed_config.Pack(hcm)
        listeners.append(json_format.MessageToDict(lst))
    clusters = []
    for c in generate(CLUSTER_TYPE, proxy, push):
        if c.HasField("eds_cluster_config") or c.type == c.EDS:
            c.ClearField("eds_cluster_config")
            c.type = c.STATIC
            c.load_assignment.cluster_name = c.name
            if c.name in assignments:
                c.load_assignment.CopyFrom(assignments[c.name])
        clusters.append(json_format.MessageToDict(c))
    # What the agent's bootstrap adds: the SDS cluster the TLS contexts point at (no agent runs here,
    # so the certificates never arrive; the proxy is measured with its config, waiting for them).
    from types import SimpleNamespace

    from proxy.agent.bootstrap import sds_cluster

    clusters.append(
        sds_cluster(SimpleNamespace(sds_socket=tempfile.gettempdir() + "/isthmus-bench-no-sds.sock"))
    )
    return {
        "node": {"id": f"sidecar~127.0.0.10~productpage-v1.{bookinfo.NS}~{bookinfo.NS}.svc.cluster.local"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }


def idle_rss(n_services: int, settle_s: float) -> dict:
    admin = free_port()
    boot = sidecar_bootstrap(n_services, admin)
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="isthmus-bench-mem-") as f:
        json.dump(boot, f)
        f.flush()
        started = time.monotonic()
        with process([_python(), "-m", "proxy", "-c", f.name, "-l", "warning"], cwd=REPO) as proc:
            # The admin answers once the config is loaded; /ready may wait for the certificates that
            # no agent sends here, so the config's own cost is measured from this point.
            wait_for_port("127.0.0.1", admin, proc=proc, timeout=120)
            ready_s = time.monotonic() - started
            time.sleep(settle_s)
            return {
                "config": "bookinfo (productpage sidecar)" if n_services == 0 else f"{n_services} services",
                "listeners": len(boot["static_resources"]["listeners"]),
                "clusters": len(boot["static_resources"]["clusters"]),
                "admin_up_s": ready_s,
                "idle_rss_mb": rss_mb(proc.pid),
            }


def _python() -> str:
    import sys

    return sys.executable


def run(quick: bool) -> list[dict]:
    if quick:  # 1000 services take half a minute to load on the 2-core VM: full runs only
        return [idle_rss(0, 1.0)]
    return [idle_rss(0, 3.0), idle_rss(1000, 3.0)]
