"""EDS clusters: validation of the cluster and of assignments, host reuse across updates, manager swaps."""

from __future__ import annotations

import asyncio

import pytest
from envoy.config.endpoint.v3 import endpoint_pb2
from google.protobuf import json_format

from proxy.config.errors import ConfigError
from proxy.upstream import ClusterManager, LbContext
from proxy.upstream.cluster import EdsCluster, build_cluster
from tests.unit.proxy.upstream.helpers import cluster_proto, ctx, endpoints, load_assignment

EDS = {"type": "EDS", "eds_cluster_config": {"eds_config": {"ads": {}}, "service_name": "svc"}}


def cla(*locality_entries, **extra) -> endpoint_pb2.ClusterLoadAssignment:
    data = load_assignment(*locality_entries)
    data["cluster_name"] = "svc"
    data.update(extra)
    return json_format.ParseDict(data, endpoint_pb2.ClusterLoadAssignment())


def eds_cluster(**fields) -> EdsCluster:
    c = build_cluster(cluster_proto(**{**EDS, **fields}), ctx(), "cluster 'backend'")
    assert isinstance(c, EdsCluster)
    return c


def test_eds_cluster_uses_service_name_and_has_no_hosts_until_its_assignment():
    c = eds_cluster()
    assert c.service_name == "svc"
    assert c.hosts == [] and c.assignment is None and c.choose_host(LbContext()) is None
    assert c.initial_fetch_timeout == 15.0
    plain = build_cluster(
        cluster_proto(type="EDS", eds_cluster_config={"eds_config": {"ads": {}}}), ctx(), "c"
    )
    assert plain.service_name == "backend"


def test_update_endpoints_keeps_hosts_of_unchanged_addresses():
    c = eds_cluster()
    c.update_endpoints(cla(endpoints("10.0.0.1:80", "10.0.0.2:80")), version="1")
    first = {h.address: h for h in c.hosts}
    first[("10.0.0.1", 80)].stats.rq_total = 7  # per-host stats survive
    c.update_endpoints(cla(endpoints(("10.0.0.1:80", 5), "10.0.0.3:80")), version="2")
    now = {h.address: h for h in c.hosts}
    assert now[("10.0.0.1", 80)] is first[("10.0.0.1", 80)]
    assert now[("10.0.0.1", 80)].weight == 5 and now[("10.0.0.1", 80)].stats.rq_total == 7
    assert ("10.0.0.2", 80) not in now
    assert c.stats.membership_total.value == 2 and c.assignment_version == "2"
    c.update_endpoints(cla())
    assert c.hosts == [] and c.choose_host(LbContext()) is None


def test_bad_assignments_are_rejected_with_their_path_and_change_nothing():
    c = eds_cluster()
    c.update_endpoints(cla(endpoints("10.0.0.1:80")))
    with pytest.raises(ConfigError) as e:
        c.prepare_endpoints(cla(endpoints("not-an-ip:80")), "ClusterLoadAssignment 'svc'")
    assert (
        e.value.path
        == "ClusterLoadAssignment 'svc'.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address"
    )
    with pytest.raises(ConfigError, match="drop_overloads"):
        c.prepare_endpoints(cla(policy={"drop_overloads": [{"category": "x"}]}))
    assert [h.address for h in c.hosts] == [("10.0.0.1", 80)]


@pytest.mark.parametrize(
    "fields,path",
    [
        ({"lb_policy": "CLUSTER_PROVIDED"}, "cluster 'backend'.lb_policy"),
        ({"load_assignment": load_assignment(endpoints("10.0.0.1:80"))}, "cluster 'backend'.load_assignment"),
        (
            {"eds_cluster_config": {"eds_config": {"api_config_source": {"api_type": "GRPC"}}}},
            "cluster 'backend'.eds_cluster_config.eds_config.api_config_source",
        ),
    ],
)
def test_bad_eds_clusters_are_rejected(fields, path):
    with pytest.raises(ConfigError) as e:
        build_cluster(cluster_proto(**{**EDS, **fields}), ctx(), "cluster 'backend'")
    assert e.value.path == path


def test_out_of_range_lb_policy_is_rejected():
    proto = cluster_proto(**EDS)
    proto.lb_policy = 99  # an open enum accepts unknown values on the wire
    with pytest.raises(ConfigError, match="lb_policy 99 is not supported"):
        build_cluster(proto, ctx(), "c")


def test_manager_warming_activate_and_remove():
    async def main():
        cm = ClusterManager(ctx())
        cm.started = True
        c = eds_cluster()
        cm.set_warming(c)
        assert cm.get("backend") is None and cm.warming["backend"] is c
        c.update_endpoints(cla(endpoints("10.0.0.1:80")))
        assert cm.activate(c) is None
        assert cm.get("backend") is c and "backend" not in cm.warming
        c2 = eds_cluster()
        c2.update_endpoints(cla(endpoints("10.0.0.2:80")))
        assert cm.activate(c2) is c and c.closed  # the replaced cluster drains
        assert cm.remove("backend") and cm.get("backend") is None and c2.closed
        assert cm.stats.counter("cluster_added").value == 1
        assert cm.stats.counter("cluster_modified").value == 1
        assert cm.stats.counter("cluster_removed").value == 1

    asyncio.run(main())
