"""The transparent-mode plan (pure): names, addresses, hosts files and istio-init's nat rules."""

from __future__ import annotations

import ipaddress

import pytest

from isthmus.launcher.netns import (
    IFNAMSIZ,
    SUBNET,
    Capture,
    PlanError,
    Workload,
    hosts_file,
    iptables_restore_text,
    istio_init_rules,
    leftovers,
    ours,
    plan_mesh,
)

# What istio-init (tools/istio-iptables, REDIRECT mode, all inbound ports) writes, with our proxy's
# admin/capture/health ports excluded from inbound capture.
EXPECTED_RULES = [
    "-N ISTIO_INBOUND",
    "-N ISTIO_REDIRECT",
    "-N ISTIO_IN_REDIRECT",
    "-N ISTIO_OUTPUT",
    "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
    "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
    "-A PREROUTING -p tcp -j ISTIO_INBOUND",
    "-A ISTIO_INBOUND -p tcp --dport 15000 -j RETURN",
    "-A ISTIO_INBOUND -p tcp --dport 15001 -j RETURN",
    "-A ISTIO_INBOUND -p tcp --dport 15006 -j RETURN",
    "-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN",
    "-A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN",
    "-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN",
    "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT",
    "-A OUTPUT -p tcp -j ISTIO_OUTPUT",
    "-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN",
    "-A ISTIO_OUTPUT -o lo -p tcp -m multiport --dports 15000,15001,15006,15020,15021,15090 -j RETURN",
    "-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT",
    "-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN",
    "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN",
    "-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT",
    "-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN",
    "-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN",
    "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN",
    "-A ISTIO_OUTPUT -j ISTIO_REDIRECT",
]


def test_rules_for_a_workload_are_istio_inits():
    assert istio_init_rules("198.18.0.2") == EXPECTED_RULES


def test_a_custom_admin_port_is_excluded_too_and_uid_gid_follow_the_options():
    rules = istio_init_rules("198.18.0.2", Capture(proxy_uid=2000, proxy_gid=2001, admin_port=19000))
    assert "-A ISTIO_INBOUND -p tcp --dport 19000 -j RETURN" in rules
    assert rules.index("-A ISTIO_INBOUND -p tcp --dport 19000 -j RETURN") < rules.index(
        "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT"
    )
    assert "-A ISTIO_OUTPUT -m owner --uid-owner 2000 -j RETURN" in rules
    assert "-A ISTIO_OUTPUT -m owner --gid-owner 2001 -j RETURN" in rules
    assert not any("1337" in r for r in rules)


def test_restore_text_is_one_atomic_nat_transaction():
    text = iptables_restore_text(EXPECTED_RULES)
    lines = text.splitlines()
    assert lines[0] == "*nat" and lines[-1] == "COMMIT" and lines[1:-1] == EXPECTED_RULES


def test_plan_names_addresses_and_setup_commands():
    plan = plan_mesh([Workload("client"), Workload("server")], run_id="abc123")
    assert plan.hub_netns == "isth-abc123"
    assert plan.bridge == "isth-abc123-br"
    assert plan.bridge_ip == "198.18.0.1"
    client, server = plan.workloads
    assert (client.netns, client.ip, client.bridge_port) == (
        "isth-abc123-client",
        "198.18.0.2",
        "isth-abc123-v02",
    )
    assert (server.netns, server.ip) == ("isth-abc123-server", "198.18.0.3")
    assert plan.service_addresses == {"client": "198.18.0.2", "server": "198.18.0.3"}

    argvs = [c.argv for c in plan.setup_commands()]
    assert argvs[0] == ("ip", "netns", "add", "isth-abc123")
    assert ("ip", "-n", "isth-abc123", "link", "add", "isth-abc123-br", "type", "bridge") in argvs
    assert ("ip", "-n", "isth-abc123", "addr", "add", "198.18.0.1/24", "dev", "isth-abc123-br") in argvs
    assert (
        "ip", "-n", "isth-abc123", "link", "add", "isth-abc123-v03", "type", "veth",
        "peer", "name", "eth0", "netns", "isth-abc123-server",
    ) in argvs  # fmt: skip
    assert ("ip", "-n", "isth-abc123-server", "addr", "add", "198.18.0.3/24", "dev", "eth0") in argvs
    assert ("ip", "-n", "isth-abc123-server", "link", "set", "lo", "up") in argvs
    assert (
        "ip",
        "-n",
        "isth-abc123-server",
        "route",
        "add",
        "default",
        "via",
        "198.18.0.1",
        "dev",
        "eth0",
    ) in argvs
    restores = [c for c in plan.setup_commands() if "iptables-restore" in c.argv]
    assert [c.argv[3] for c in restores] == ["isth-abc123-client", "isth-abc123-server"]
    assert restores[0].stdin == iptables_restore_text(EXPECTED_RULES)
    # Every namespace is created before anything is put in it.
    for ns in plan.netns_names():
        add = argvs.index(("ip", "netns", "add", ns))
        assert all(argvs.index(a) > add for a in argvs if ns in a[1:3] and a[0] == "ip" and a[1] == "-n")


def test_workload_without_sidecar_gets_no_capture_rules():
    plan = plan_mesh([Workload("client", sidecar=False), Workload("server")], run_id="abc123")
    restores = [c.argv[3] for c in plan.setup_commands() if "iptables-restore" in c.argv]
    assert restores == ["isth-abc123-server"]


def test_teardown_deletes_every_namespace_workloads_first_and_tolerates_missing():
    plan = plan_mesh([Workload("a"), Workload("b")], run_id="0a0b0c")
    cmds = plan.teardown_commands()
    assert [c.argv for c in cmds] == [
        ("ip", "netns", "del", "isth-0a0b0c-a"),
        ("ip", "netns", "del", "isth-0a0b0c-b"),
        ("ip", "netns", "del", "isth-0a0b0c"),
    ]
    assert all(c.ignore_missing for c in cmds)


def test_hosts_file_names_every_service_short_namespaced_and_fqdn():
    plan = plan_mesh([Workload("productpage"), Workload("details")], run_id="abc123")
    files = plan.hosts_files()
    assert set(files) == {"/etc/netns/isth-abc123-productpage/hosts", "/etc/netns/isth-abc123-details/hosts"}
    text = files["/etc/netns/isth-abc123-details/hosts"]
    lines = text.splitlines()
    assert "127.0.0.1\tlocalhost" in lines
    assert (
        "198.18.0.2\tproductpage productpage.default productpage.default.svc "
        "productpage.default.svc.cluster.local" in lines
    )
    assert (
        "198.18.0.3\tdetails details.default details.default.svc details.default.svc.cluster.local" in lines
    )
    assert text.endswith("\n")
    assert len(set(files.values())) == 1  # every workload resolves every service the same way


def test_a_service_with_several_workloads_gets_a_virtual_address_from_the_top():
    plan = plan_mesh(
        [
            Workload("reviews-v1", services=("reviews",)),
            Workload("reviews-v2", services=("reviews",)),
            Workload("ratings"),
        ],
        run_id="abc123",
    )
    assert plan.service_addresses == {"reviews": "198.18.0.254", "ratings": "198.18.0.4"}
    assert [w.ip for w in plan.workloads] == ["198.18.0.2", "198.18.0.3", "198.18.0.4"]
    assert "198.18.0.254\treviews reviews.default" in hosts_file(plan.service_addresses)
    assert "reviews-v1" not in hosts_file(plan.service_addresses)


def test_addresses_never_leave_198_18_0_0_24():
    workloads = [Workload(f"w{i}") for i in range(180)] + [
        Workload(f"x{i}", services=(f"svc{i // 2}",)) for i in range(40)
    ]
    plan = plan_mesh(workloads, run_id="abc123")
    addresses = [plan.bridge_ip, *(w.ip for w in plan.workloads), *plan.service_addresses.values()]
    assert all(ipaddress.IPv4Address(a) in SUBNET for a in addresses)
    assert all(a not in (str(SUBNET.network_address), str(SUBNET.broadcast_address)) for a in addresses)
    workload_ips = [w.ip for w in plan.workloads]
    assert len(set(workload_ips)) == len(workload_ips) and plan.bridge_ip not in workload_ips
    vips = {plan.service_addresses[f"svc{i}"] for i in range(20)}
    assert len(vips) == 20 and not vips & set(workload_ips)


def test_too_many_workloads_or_virtual_addresses_are_refused():
    with pytest.raises(PlanError, match="do not fit in 198.18.0.0/24"):
        plan_mesh([Workload(f"w{i}") for i in range(254)], run_id="abc123")
    crowded = [Workload(f"w{i}") for i in range(251)] + [
        Workload(f"r{i}", services=("reviews",)) for i in range(2)
    ]
    with pytest.raises(PlanError, match="no address left .* service 'reviews'"):
        plan_mesh(crowded, run_id="abc123")


def test_interface_names_fit_the_kernel_limit():
    plan = plan_mesh([Workload(f"w{i}") for i in range(253)], prefix="abcd-", run_id="ffffff")
    for name in [plan.bridge, *(w.bridge_port for w in plan.workloads)]:
        assert len(name) <= IFNAMSIZ, name
    assert plan.workloads[-1].bridge_port == "abcd-ffffff-vfe"


@pytest.mark.parametrize("prefix", ["", "isth", "Isth-", "isthmus-", "is th-", "1sth-", "a_b-"])
def test_bad_prefixes_are_refused(prefix):
    with pytest.raises(PlanError, match="prefix"):
        plan_mesh([Workload("a")], prefix=prefix)


@pytest.mark.parametrize("name", ["", "Client", "a_b", "-a", "a-", "a.b", "x" * 64, "9lives"])
def test_bad_workload_names_are_refused_by_name(name):
    with pytest.raises(PlanError, match="workload name"):
        plan_mesh([Workload(name)])


def test_bad_service_names_duplicates_and_empty_plans_are_refused():
    with pytest.raises(PlanError, match="service .*'Reviews'"):
        plan_mesh([Workload("a", services=("Reviews",))])
    with pytest.raises(PlanError, match="appears twice"):
        plan_mesh([Workload("a"), Workload("a")])
    with pytest.raises(PlanError, match="no workloads"):
        plan_mesh([])
    with pytest.raises(PlanError, match="run id"):
        plan_mesh([Workload("a")], run_id="xyz")


@pytest.mark.parametrize(
    "capture, message",
    [
        (Capture(proxy_uid=0), "proxy_uid 0"),
        (Capture(outbound_port=0), "outbound_port 0"),
        (Capture(inbound_port=15001), "must differ"),
        (Capture(inbound_port=16006), "must include the inbound port 16006"),
    ],
)
def test_bad_capture_options_are_refused(capture, message):
    with pytest.raises(PlanError, match=message):
        plan_mesh([Workload("a")], capture=capture)


def test_pod_address_outside_the_subnet_is_refused():
    with pytest.raises(PlanError, match="outside 198.18.0.0/24"):
        istio_init_rules("10.0.0.2")


def test_run_ids_are_unique_per_plan():
    ids = {plan_mesh([Workload("a")]).run_id for _ in range(20)}
    assert len(ids) > 1


def test_leftovers_are_only_names_with_our_prefix_and_a_run_id():
    assert (
        ours("isth-abc123", "isth-")
        and ours("isth-abc123-client", "isth-")
        and ours("isth-abc123-br", "isth-")
    )
    for name in [
        "isth-",
        "isth-abc12",
        "isth-abc123x",
        "isthmus-odst-1234",
        "eth0",
        "isth-ABC123",
        "xisth-abc123",
    ]:
        assert not ours(name, "isth-"), name
    found = leftovers(
        "isth-",
        netns=["isth-abc123", "isth-abc123-server", "other", "isthmus-odst-12345678"],
        links=["lo", "eth0", "isth-abc123-br", "isth-abc123-v02"],
        netns_dirs=["isth-abc123-server", "myns"],
    )
    assert found == {
        "netns": ["isth-abc123", "isth-abc123-server"],
        "links": ["isth-abc123-br", "isth-abc123-v02"],
        "netns_dirs": ["isth-abc123-server"],
    }
    with pytest.raises(PlanError):
        leftovers("", [], [], [])
