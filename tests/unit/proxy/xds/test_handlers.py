"""The xDS handlers with the real managers and a fake client: batch validation, atomic swap, warming,
NACK keeps the old config, socket hand-over, interest following need."""

from __future__ import annotations

import asyncio
import socket

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from google.protobuf import json_format

from proxy.config.bootstrap import load_extensions
from proxy.config.context import FactoryContext
from proxy.core.headers import Headers
from proxy.core.listener import ListenerManager
from proxy.stats.store import Store
from proxy.upstream import ClusterManager
from proxy.xds import api
from proxy.xds.handlers import XdsHandlers
from tests.support.net import free_port

HCM_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
ROUTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
}


class FakeClient:
    def __init__(self) -> None:
        self.interest: dict[str, set[str]] = {}
        self.registered: list = []

    def register(self, handler) -> None:
        self.registered.append(handler.type_url)

    def set_interest(self, type_url: str, names: set[str]) -> None:
        self.interest[type_url] = set(names)


class Env:
    """One proxy's managers and handlers, without sockets unless a listener binds one."""

    def __init__(self) -> None:
        load_extensions()
        self.stats = Store()
        self.now = 1000.0
        self.ctx = FactoryContext(stats=self.stats)
        self.cm = ClusterManager(self.ctx)
        self.cm.started = True
        self.ctx.cluster_manager = self.cm
        self.handlers = XdsHandlers(self.cm, lambda: self.lm, self.stats, clock=lambda: self.now)
        self.ctx.extra["rds_provider_factory"] = self.handlers.rds.provider_factory
        self.lm = ListenerManager([], self.ctx)
        self.lm.drain_time = 0.2
        self.client = FakeClient()
        self.handlers.attach(self.client)

    async def push(self, handler, version: str, resources: dict, removed=(), delta=False):
        update = api.ResourceUpdate(
            type_url=handler.type_url,
            version_info=version,
            resources=resources,
            removed=set(removed),
            delta=delta,
        )
        await handler.on_update(update)

    def close(self) -> None:
        self.lm.abort_all()
        self.lm.stop_accepting()
        for listener in self.lm.draining_listeners:
            listener.stop_accepting()


def parse(data: dict, msg):
    return json_format.ParseDict(data, msg)


def cluster(name: str, port: int = 8080, **extra) -> cluster_pb2.Cluster:
    data = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}
                            }
                        }
                    ]
                }
            ],
        },
    }
    data.update(extra)
    return parse(data, cluster_pb2.Cluster())


def eds_cluster(name: str, service: str = "", timeout: str = "") -> cluster_pb2.Cluster:
    source: dict = {"ads": {}}
    if timeout:
        source["initial_fetch_timeout"] = timeout
    ecc: dict = {"eds_config": source}
    if service:
        ecc["service_name"] = service
    return parse(
        {"name": name, "type": "EDS", "connect_timeout": "1s", "eds_cluster_config": ecc},
        cluster_pb2.Cluster(),
    )


def cla(name: str, *ports: int) -> endpoint_pb2.ClusterLoadAssignment:
    eps = [
        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}}
        for p in ports
    ]
    return parse(
        {"cluster_name": name, "endpoints": [{"lb_endpoints": eps}]}, endpoint_pb2.ClusterLoadAssignment()
    )


def route_config(name: str, cluster_name: str, prefix: str = "/") -> route_pb2.RouteConfiguration:
    return parse(
        {
            "name": name,
            "virtual_hosts": [
                {
                    "name": "vh",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": prefix}, "route": {"cluster": cluster_name}}],
                }
            ],
        },
        route_pb2.RouteConfiguration(),
    )


def listener(
    name: str, port: int, *, rds: str = "", route_cluster: str = "c", http_filters=None, rds_timeout=""
) -> listener_pb2.Listener:
    hcm: dict = {"@type": HCM_TYPE, "stat_prefix": name, "http_filters": http_filters or [ROUTER]}
    if rds:
        source: dict = {"ads": {}}
        if rds_timeout:
            source["initial_fetch_timeout"] = rds_timeout
        hcm["rds"] = {"route_config_name": rds, "config_source": source}
    else:
        hcm["route_config"] = json_format.MessageToDict(route_config("inline", route_cluster))
    return parse(
        {
            "name": name,
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [
                {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
            ],
        },
        listener_pb2.Listener(),
    )


def run(coro_fn):
    async def main():
        env = Env()
        try:
            await coro_fn(env)
        finally:
            env.close()

    asyncio.run(main())


def matched_cluster(provider, path: str = "/") -> str | None:
    table = provider.current()
    if table is None:
        return None
    route = table.match(Headers([(":path", path), (":authority", "x"), (":method", "GET")]), 0)
    return route.action.cluster if route is not None else None


# ---- CDS / EDS --------------------------------------------------------------------------------------


def test_cds_batch_is_validated_whole_and_a_bad_cluster_changes_nothing():
    async def t(env: Env):
        await env.push(env.handlers.cds, "1", {"a": cluster("a", 1001), "b": cluster("b", 1002)})
        a1 = env.cm.get("a")
        bad = cluster("c", 1003)
        bad.lb_policy = 99  # out of range on the wire
        with pytest.raises(api.UpdateRejected) as e:
            await env.push(env.handlers.cds, "2", {"a": cluster("a", 2001), "c": bad})
        assert set(e.value.errors) == {"c"} and "lb_policy 99" in e.value.errors["c"]
        assert env.cm.get("a") is a1 and env.cm.get("c") is None  # nothing of the batch applied
        assert env.cm.get("a").hosts[0].address == ("127.0.0.1", 1001)
        conflict = cluster("d", 1004, lb_policy="CLUSTER_PROVIDED")
        with pytest.raises(api.UpdateRejected, match="CLUSTER_PROVIDED is not valid"):
            await env.push(env.handlers.cds, "3", {"d": conflict})

    run(t)


def test_cds_sotw_removes_missing_clusters_delta_removes_named_ones_and_identical_is_kept():
    async def t(env: Env):
        await env.push(env.handlers.cds, "1", {"a": cluster("a"), "b": cluster("b")})
        a = env.cm.get("a")
        await env.push(env.handlers.cds, "2", {"a": cluster("a")})
        assert env.cm.get("a") is a and env.cm.get("b") is None
        await env.push(env.handlers.cds, "3", {"b": cluster("b")}, removed={"a"}, delta=True)
        assert env.cm.get("a") is None and env.cm.get("b") is not None
        assert env.cm.get("b").version_info == "3" and env.cm.get("b").dynamic

    run(t)


def test_static_clusters_cannot_be_changed_by_cds():
    async def t(env: Env):
        env.cm.clusters["xds"] = object.__new__(type(env.cm))  # any object stands in
        env.cm.static_names = {"xds"}
        with pytest.raises(api.UpdateRejected, match="static cluster"):
            await env.push(env.handlers.cds, "1", {"xds": cluster("xds")})

    run(t)


def test_eds_cluster_warms_until_its_endpoints_arrive_then_replaces_the_active_one():
    async def t(env: Env):
        await env.push(env.handlers.cds, "1", {"svc": cluster("svc", 1001)})
        static_one = env.cm.get("svc")
        await env.push(env.handlers.cds, "2", {"svc": eds_cluster("svc", service="svc-eds")})
        assert env.cm.get("svc") is static_one  # still serving while the new one warms
        assert "svc" in env.cm.warming
        assert env.client.interest[api.ENDPOINT] == {"svc-eds"}
        await env.push(env.handlers.eds, "e1", {"svc-eds": cla("svc-eds", 2001, 2002)})
        active = env.cm.get("svc")
        assert active is not static_one and not env.cm.warming
        assert sorted(h.address[1] for h in active.hosts) == [2001, 2002]
        assert static_one.closed  # the replaced cluster drains
        assert env.handlers.cds.initialized.done
        assert env.stats.counter("cluster.svc.update_success").value == 1

    run(t)


def test_eds_endpoint_change_keeps_hosts_and_a_bad_assignment_is_rejected():
    async def t(env: Env):
        await env.push(env.handlers.cds, "1", {"svc": eds_cluster("svc")})
        assert not env.handlers.cds.initialized.done  # its first cluster is still warming
        await env.push(env.handlers.eds, "e1", {"svc": cla("svc", 2001, 2002)})
        assert env.handlers.cds.initialized.done
        c = env.cm.get("svc")
        kept = [h for h in c.hosts if h.address[1] == 2001][0]
        await env.push(env.handlers.eds, "e2", {"svc": cla("svc", 2001, 2003)})
        assert env.cm.get("svc") is c
        assert [h for h in c.hosts if h.address[1] == 2001][0] is kept
        bad = cla("svc", 2001)
        bad.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address = "nope"
        with pytest.raises(api.UpdateRejected) as e:
            await env.push(env.handlers.eds, "e3", {"svc": bad})
        assert "svc" in e.value.errors and "malformed IP" in e.value.errors["svc"]
        assert sorted(h.address[1] for h in c.hosts) == [2001, 2003]
        assert env.stats.counter("cluster.svc.update_rejected").value == 1

    run(t)


def test_recreated_eds_cluster_warms_at_once_from_the_cached_assignment():
    async def t(env: Env):
        await env.push(env.handlers.cds, "1", {"svc": eds_cluster("svc")})
        await env.push(env.handlers.eds, "e1", {"svc": cla("svc", 2001)})
        await env.push(env.handlers.cds, "2", {"svc": eds_cluster("svc", timeout="7s")})
        assert not env.cm.warming and [h.address[1] for h in env.cm.get("svc").hosts] == [2001]

    run(t)


def test_eds_warming_gives_up_after_initial_fetch_timeout():
    async def t(env: Env):
        await env.push(env.handlers.cds, "1", {"svc": eds_cluster("svc", timeout="0.05s")})
        assert env.cm.get("svc") is None
        for _ in range(100):
            if env.cm.get("svc") is not None:
                break
            await asyncio.sleep(0.01)
        assert env.cm.get("svc") is not None and env.cm.get("svc").hosts == []
        assert env.handlers.cds.initialized.done

    run(t)


# ---- LDS / RDS --------------------------------------------------------------------------------------


def test_listener_with_rds_warms_until_its_routes_arrive():
    async def t(env: Env):
        port = free_port()
        await env.push(env.handlers.lds, "1", {"l": listener("l", port, rds="r1")})
        assert env.lm.get("l") is None and "l" in env.lm.warming
        assert env.client.interest[api.ROUTE] == {"r1"}
        assert not env.handlers.lds.initialized.done
        await env.push(env.handlers.rds, "r-1", {"r1": route_config("r1", "backend")})
        active = env.lm.get("l")
        assert active is not None and not env.lm.warming and env.handlers.lds.initialized.done
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            pass
        sub = env.handlers.rds.subscriptions["r1"]
        assert matched_cluster(sub) == "backend" and sub.version_info == "r-1"
        assert env.stats.counter("http.l.rds.r1.update_success").value == 1
        assert env.stats.gauge("listener_manager.total_listeners_active").value == 1

    run(t)


def test_rds_update_swaps_the_table_and_a_bad_one_keeps_the_old():
    async def t(env: Env):
        await env.push(env.handlers.lds, "1", {"l": listener("l", free_port(), rds="r1")})
        await env.push(env.handlers.rds, "1", {"r1": route_config("r1", "one")})
        sub = env.handlers.rds.subscriptions["r1"]
        old_table = sub.current()  # what a request in flight holds
        await env.push(env.handlers.rds, "2", {"r1": route_config("r1", "two")})
        assert matched_cluster(sub) == "two"
        assert old_table.match(Headers([(":path", "/"), (":authority", "x")]), 0).action.cluster == "one"
        bad = route_config("r1", "three")
        bad.virtual_hosts[0].routes[0].match.safe_regex.regex = "("  # an invalid regex
        bad.virtual_hosts[0].routes[0].match.ClearField("prefix")
        with pytest.raises(api.UpdateRejected) as e:
            await env.push(env.handlers.rds, "3", {"r1": bad})
        assert "r1" in e.value.errors
        assert matched_cluster(sub) == "two" and sub.version_info == "2"
        assert env.stats.counter("http.l.rds.r1.update_rejected").value == 1

    run(t)


def test_bad_listener_batch_is_rejected_whole_naming_the_listener():
    async def t(env: Env):
        p1, p2 = free_port(), free_port()
        await env.push(env.handlers.lds, "1", {"a": listener("a", p1)})
        a = env.lm.get("a")
        not_router_last = [
            ROUTER,
            {
                "name": "envoy.filters.http.fault",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
                },
            },
        ]
        with pytest.raises(api.UpdateRejected) as e:
            await env.push(
                env.handlers.lds,
                "2",
                {
                    "a": listener("a", p1, route_cluster="x"),
                    "b": listener("b", p2, http_filters=not_router_last),
                },
            )
        assert set(e.value.errors) == {"b"} and "router" in e.value.errors["b"]
        assert env.lm.get("a") is a and env.lm.get("b") is None
        # Its port was not kept bound: a later good update can use it.
        await env.push(env.handlers.lds, "3", {"a": listener("a", p1), "b": listener("b", p2)})
        assert env.lm.get("b") is not None

    run(t)


def test_listener_on_a_taken_port_is_rejected_and_the_old_config_stays():
    async def t(env: Env):
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        try:
            port = busy.getsockname()[1]
            p1 = free_port()
            await env.push(env.handlers.lds, "1", {"a": listener("a", p1)})
            with pytest.raises(api.UpdateRejected) as e:
                await env.push(env.handlers.lds, "2", {"a": listener("a", p1), "b": listener("b", port)})
            assert set(e.value.errors) == {"b"} and "in use" in e.value.errors["b"]
            assert env.lm.get("b") is None and env.lm.get("a") is not None
            with pytest.raises(api.UpdateRejected, match="already used by listener 'a'"):
                await env.push(env.handlers.lds, "3", {"a": listener("a", p1), "c": listener("c", p1)})
        finally:
            busy.close()

    run(t)


def test_changed_listener_on_the_same_address_takes_over_the_socket_and_the_old_one_drains():
    async def t(env: Env):
        port = free_port()
        await env.push(env.handlers.lds, "1", {"a": listener("a", port, route_cluster="one")})
        old = env.lm.get("a")
        sock = old.sock
        client = socket.create_connection(("127.0.0.1", port), timeout=1)
        for _ in range(100):
            if old.connections:
                break
            await asyncio.sleep(0.01)
        assert len(old.connections) == 1
        await env.push(env.handlers.lds, "2", {"a": listener("a", port, route_cluster="two")})
        new = env.lm.get("a")
        assert new is not old and new.sock is sock and old.sock is None
        assert old.draining and old in env.lm.draining_listeners
        assert env.stats.gauge("listener_manager.total_listeners_draining").value == 1
        # New connections go to the new listener.
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            for _ in range(100):
                if new.connections:
                    break
                await asyncio.sleep(0.01)
            assert len(new.connections) == 1
        # The old connection is closed when drain_time ends.
        client.settimeout(3)
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(None, client.recv, 1) == b""
        client.close()
        assert old not in env.lm.draining_listeners

    run(t)


def test_lds_sotw_removal_and_rds_interest_follow_need():
    async def t(env: Env):
        await env.push(
            env.handlers.lds,
            "1",
            {"a": listener("a", free_port(), rds="ra"), "b": listener("b", free_port(), rds="rb")},
        )
        assert env.client.interest[api.ROUTE] == {"ra", "rb"}
        await env.push(env.handlers.rds, "1", {"ra": route_config("ra", "x"), "rb": route_config("rb", "y")})
        await env.push(env.handlers.lds, "2", {"a": env.lm.get("a").proto})
        assert env.lm.get("b") is None
        await asyncio.sleep(0.3)  # let b's drain end
        env.handlers.rds.refresh_interest()
        assert env.client.interest[api.ROUTE] == {"ra"}

    run(t)


def test_route_to_an_undefined_cluster_is_accepted():
    async def t(env: Env):
        await env.push(env.handlers.lds, "1", {"a": listener("a", free_port(), rds="ra")})
        await env.push(env.handlers.rds, "1", {"ra": route_config("ra", "nobody-defined-this")})
        assert env.lm.get("a") is not None
        assert matched_cluster(env.handlers.rds.subscriptions["ra"]) == "nobody-defined-this"

    run(t)


def test_listener_warming_ends_at_its_rds_initial_fetch_timeout():
    async def t(env: Env):
        await env.push(
            env.handlers.lds, "1", {"a": listener("a", free_port(), rds="ra", rds_timeout="0.05s")}
        )
        assert env.lm.get("a") is None
        await asyncio.wait_for(env.handlers.lds.initialized.wait(), 2)
        assert env.lm.get("a") is not None

    run(t)


def test_lds_and_cds_batches_are_counted_under_envoys_names():
    async def t(env: Env):
        await env.push(env.handlers.cds, "1", {"a": cluster("a")})
        bad = cluster("b")
        bad.lb_policy = 99
        with pytest.raises(api.UpdateRejected):
            await env.push(env.handlers.cds, "2", {"b": bad})
        env.handlers.lds.on_decode_error(ValueError("undecodable"))
        c = env.stats.counter
        assert [
            c(f"cluster_manager.cds.{n}").value
            for n in ("update_attempt", "update_success", "update_rejected")
        ] == [2, 1, 1]
        assert [
            c(f"listener_manager.lds.{n}").value
            for n in ("update_attempt", "update_success", "update_rejected")
        ] == [1, 0, 1]

    run(t)


def test_a_listener_update_waits_for_a_cluster_update_still_starting_its_clusters():
    """Pilot pushes CDS then LDS; a listener naming a new cluster must not see the CDS batch half done."""

    async def t(env: Env):
        gate = asyncio.Event()
        from proxy.upstream import cluster as cluster_module

        original_start = cluster_module.Cluster.start

        async def slow_start(self):
            await gate.wait()
            return await original_start(self)

        cluster_module.Cluster.start = slow_start
        try:
            cds = asyncio.create_task(env.push(env.handlers.cds, "1", {"new": cluster("new", 1001)}))
            await asyncio.sleep(0)  # CDS is now inside its batch, starting the cluster
            seen = {}

            async def lds():
                await env.handlers.lds.on_update(
                    api.ResourceUpdate(type_url=api.LISTENER, version_info="1", resources={})
                )
                seen["cluster_at_lds"] = env.cm.get("new")

            lds_task = asyncio.create_task(lds())
            await asyncio.sleep(0.05)
            assert not lds_task.done()  # LDS waits for the CDS batch
            gate.set()
            await cds
            await lds_task
            assert seen["cluster_at_lds"] is not None
        finally:
            cluster_module.Cluster.start = original_start

    run(t)
