"""ServiceEntry/WorkloadEntry translation, auto-registration from node metadata, and the aggregate."""

from __future__ import annotations

import asyncio

import pytest

from pilot.model.config import Config, ConfigSnapshot
from pilot.model.proxy import parse_node
from pilot.serviceregistry.aggregate import AggregateRegistry
from pilot.serviceregistry.autoregister import AutoRegistry, MetadataError, workload_from_proxy
from pilot.serviceregistry.names import resolve_short_name
from pilot.serviceregistry.serviceentry import ServiceEntryRegistry, build


def cfg(kind, name, spec, ns="default"):
    return Config(kind, "networking.istio.io", "v1", ns, name, spec)


def snap(*configs):
    return ConfigSnapshot({c.key: c for c in configs}, 1)


def test_short_names_resolve_like_istio():
    assert resolve_short_name("reviews", "default") == "reviews.default.svc.cluster.local"
    assert (
        resolve_short_name("reviews.other.svc.cluster.local", "default") == "reviews.other.svc.cluster.local"
    )
    assert resolve_short_name("*", "default") == "*"


def test_service_entry_with_workload_selector():
    se = cfg(
        "ServiceEntry",
        "echo",
        {
            "hosts": ["echo.mesh.internal"],
            "ports": [{"number": 7070, "name": "grpc", "protocol": "GRPC", "targetPort": 17070}],
            "resolution": "STATIC",
            "workloadSelector": {"labels": {"app": "echo"}},
        },
    )
    we1 = cfg(
        "WorkloadEntry", "echo-1", {"address": "127.0.0.21", "labels": {"app": "echo", "version": "v1"}}
    )
    we2 = cfg(
        "WorkloadEntry",
        "echo-2",
        {"address": "127.0.0.22", "labels": {"app": "echo"}, "ports": {"grpc": 27070}},
    )
    other = cfg("WorkloadEntry", "x", {"address": "127.0.0.23", "labels": {"app": "other"}})
    elsewhere = cfg(
        "WorkloadEntry", "echo-3", {"address": "127.0.0.24", "labels": {"app": "echo"}}, ns="other"
    )
    services, endpoints = build(snap(se, we1, we2, other, elsewhere))
    (svc,) = services
    assert (svc.hostname, svc.resolution, svc.mesh_external) == ("echo.mesh.internal", "STATIC", False)
    assert sorted((e.address, e.port, e.workload_name) for e in endpoints) == [
        ("127.0.0.21", 17070, "echo-1"),
        ("127.0.0.22", 27070, "echo-2"),
    ]
    assert next(e for e in endpoints if e.address == "127.0.0.21").labels["version"] == "v1"


def test_external_dns_and_none_resolution():
    dns = cfg(
        "ServiceEntry",
        "google",
        {
            "hosts": ["www.google.com"],
            "ports": [{"number": 443, "name": "https", "protocol": "HTTPS"}],
            "location": "MESH_EXTERNAL",
            "resolution": "DNS",
        },
    )
    none = cfg(
        "ServiceEntry",
        "any",
        {
            "hosts": ["*.example.com"],
            "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
            "resolution": "NONE",
        },
    )
    listed = cfg(
        "ServiceEntry",
        "db",
        {
            "hosts": ["db"],
            "ports": [{"number": 3306, "name": "tcp", "protocol": "TCP"}],
            "resolution": "STATIC",
            "endpoints": [{"address": "127.0.0.30", "locality": "eu/a", "weight": 2}],
        },
    )
    services, endpoints = build(snap(dns, none, listed))
    by_host = {s.hostname: s for s in services}
    assert by_host["www.google.com"].mesh_external and by_host["www.google.com"].resolution == "DNS"
    assert [(e.address, e.port) for e in endpoints if e.service == "www.google.com"] == [
        ("www.google.com", 443)
    ]
    assert not [e for e in endpoints if e.service == "*.example.com"]
    (db,) = [e for e in endpoints if e.service == "db.default.svc.cluster.local"]
    assert (db.locality, db.weight) == ("eu/a", 2)


def test_service_entry_registry_notifies_only_on_change():
    reg = ServiceEntryRegistry()
    calls = []
    reg.on_change(lambda: calls.append(1))
    se = cfg(
        "ServiceEntry",
        "db",
        {
            "hosts": ["db"],
            "ports": [{"number": 1, "name": "tcp"}],
            "resolution": "STATIC",
            "endpoints": [{"address": "127.0.0.30"}],
        },
    )
    assert reg.update(snap(se)) is True
    assert reg.update(snap(se)) is False
    assert calls == [1]


def proxy(ip="127.0.0.13", name="reviews-v2", **md):
    metadata = {
        "NAMESPACE": "default",
        "LABELS": {"app": "reviews", "version": "v2"},
        "SERVICE_ACCOUNT": "bookinfo-reviews",
        "WORKLOAD_NAME": "reviews-v2",
        "ISTHMUS_SERVICE_PORTS": "http:9080",
        **md,
    }
    return parse_node(f"sidecar~{ip}~{name}.default~default.svc.cluster.local", metadata)


def test_workload_from_node_metadata():
    w = workload_from_proxy(proxy(INSTANCE_IPS="127.0.0.13,10.0.0.1"))
    (svc,) = w.services
    assert svc.hostname == "reviews.default.svc.cluster.local" and svc.ports[0].protocol == "HTTP"
    (ep,) = w.endpoints
    assert (ep.address, ep.port, ep.labels, ep.service_account, ep.workload_name) == (
        "127.0.0.13",
        9080,
        {"app": "reviews", "version": "v2"},
        "bookinfo-reviews",
        "reviews-v2",
    )
    two = workload_from_proxy(
        proxy(ISTHMUS_SERVICE="reviews,reviews-canary", ISTHMUS_SERVICE_PORTS="http:9080,grpc-x:7070:17070")
    )
    assert {s.hostname for s in two.services} == {
        "reviews.default.svc.cluster.local",
        "reviews-canary.default.svc.cluster.local",
    }
    assert {(e.service_port, e.port) for e in two.endpoints} == {(9080, 9080), (7070, 17070)}


@pytest.mark.parametrize("ports", ["http", "http:x", "http:0", ":80"])
def test_bad_service_ports_are_clear_errors(ports):
    with pytest.raises(MetadataError, match="ISTHMUS_SERVICE_PORTS"):
        workload_from_proxy(proxy(ISTHMUS_SERVICE_PORTS=ports))


class FakeScheduler:
    def __init__(self):
        self.pending = []

    def __call__(self, delay, fn):
        entry = [delay, fn, False]
        self.pending.append(entry)
        handle = type("H", (), {"cancel": lambda _self: entry.__setitem__(2, True)})()
        return handle

    def fire(self):
        for entry in list(self.pending):
            if not entry[2]:
                entry[1]()
        self.pending.clear()


def test_unregister_after_grace_and_reconnect_cancels():
    sched = FakeScheduler()
    reg = AutoRegistry(scheduler=sched)
    p = proxy()
    reg.register(p)
    assert [s.hostname for s in reg.services()] == ["reviews.default.svc.cluster.local"]
    reg.unregister(p, grace_seconds=5)
    assert reg.endpoints(), "kept during the grace period"
    reg.register(p)  # reconnects in time
    sched.fire()
    assert reg.endpoints()
    reg.unregister(p, grace_seconds=5)
    sched.fire()
    assert reg.endpoints() == () and reg.services() == ()


async def test_unregister_with_real_timer():
    reg = AutoRegistry()
    removed = asyncio.Event()
    reg.on_change(lambda: removed.set() if not reg.endpoints() else None)
    p = proxy()
    reg.register(p)
    reg.unregister(p, grace_seconds=0.05)
    await asyncio.wait_for(removed.wait(), 5)
    assert reg.services() == ()


def test_bad_metadata_keeps_previous_registration():
    reg = AutoRegistry()
    reg.register(proxy())
    with pytest.raises(MetadataError):
        reg.register(proxy(ISTHMUS_SERVICE_PORTS="oops"))
    assert len(reg.endpoints()) == 1


def test_aggregate_merges_and_flags_endpoint_only_changes():
    entries = ServiceEntryRegistry()
    auto = AutoRegistry()
    agg = AggregateRegistry([entries, auto])
    seen = []
    agg.subscribe(lambda snapshot, endpoints_only: seen.append((snapshot, endpoints_only)))
    auto.register(proxy("127.0.0.13", "reviews-v2"))
    assert seen[-1][1] is False  # a new service
    auto.register(proxy("127.0.0.14", "reviews-v3", LABELS={"app": "reviews", "version": "v3"}))
    snapshot, endpoints_only = seen[-1]
    assert endpoints_only is True  # same service, one more endpoint
    assert sorted(e.address for e in snapshot.endpoints) == ["127.0.0.13", "127.0.0.14"]
    se = cfg(
        "ServiceEntry",
        "db",
        {
            "hosts": ["db"],
            "ports": [{"number": 3306, "name": "tcp"}],
            "resolution": "STATIC",
            "endpoints": [{"address": "127.0.0.30"}],
        },
    )
    entries.update(snap(se))
    snapshot, endpoints_only = seen[-1]
    assert endpoints_only is False
    assert {s.hostname for s in snapshot.services} == {
        "reviews.default.svc.cluster.local",
        "db.default.svc.cluster.local",
    }
    assert snapshot.version == 3


def test_a_client_with_only_an_app_label_registers_nothing_but_a_named_service_needs_ports():
    node = "sidecar~127.0.0.162~sleep-1.foo~foo.svc.cluster.local"
    client = parse_node(node, {"LABELS": {"app": "sleep"}})
    assert workload_from_proxy(client).services == ()
    named = parse_node(node, {"LABELS": {"app": "sleep"}, "ISTHMUS_SERVICE": "sleep"})
    with pytest.raises(MetadataError, match="ISTHMUS_SERVICE_PORTS is required"):
        workload_from_proxy(named)
