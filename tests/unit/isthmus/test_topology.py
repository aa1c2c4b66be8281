import pytest

from isthmus.launcher.topology import (
    BOOKINFO_SLOTS,
    Topology,
    Workload,
    bookinfo,
    compose_addressing,
    local_addressing,
    parse_address_base,
)


def test_local_bookinfo_gives_each_workload_its_own_loopback_address():
    topo = bookinfo(local_addressing("127.0.0.10"), 9080)
    addresses = {w.name: w.address for w in topo.workloads}
    assert addresses == {
        "productpage": "127.0.0.10",
        "details": "127.0.0.11",
        "reviews-v1": "127.0.0.12",
        "reviews-v2": "127.0.0.13",
        "reviews-v3": "127.0.0.14",
        "ratings": "127.0.0.15",
    }
    assert {w.port for w in topo.workloads} == {9080}
    assert topo.entry_url == "http://127.0.0.10:9080/productpage"
    assert topo.get("details").ready_url == "http://127.0.0.11:9080/health"


def test_env_wires_upstreams_to_their_addresses():
    topo = bookinfo(local_addressing("127.0.0.50"), 19000)
    pp = topo.get("productpage").env
    assert pp["LISTEN_ADDRESS"] == "127.0.0.50" and pp["LISTEN_PORT"] == "19000"
    assert (pp["DETAILS_HOSTNAME"], pp["DETAILS_SERVICE_PORT"]) == ("127.0.0.51", "19000")
    assert pp["REVIEWS_HOSTNAME"] == "127.0.0.52,127.0.0.53,127.0.0.54"
    assert topo.get("reviews-v3").env["RATINGS_HOSTNAME"] == "127.0.0.55"
    assert [topo.get(f"reviews-v{i}").env["SERVICE_VERSION"] for i in (1, 2, 3)] == ["v1", "v2", "v3"]
    assert topo.get("reviews-v2").argv("py") == ["py", "-m", "bookinfo.reviews"]


def test_compose_addressing_uses_service_names():
    topo = bookinfo(compose_addressing())
    assert topo.get("productpage").env["DETAILS_HOSTNAME"] == "details"
    assert topo.get("ratings").env["LISTEN_ADDRESS"] == "0.0.0.0"
    assert topo.entry_url == "http://127.0.0.1:9080/productpage"


def test_start_order_puts_dependencies_first():
    order = [w.name for w in bookinfo().start_order()]
    assert sorted(order) == sorted(BOOKINFO_SLOTS)
    for w in bookinfo().workloads:
        for dep in w.depends_on:
            assert order.index(dep) < order.index(w.name)
    assert order[-1] == "productpage"


def test_cycles_and_unknown_dependencies_are_errors():
    a = Workload("a", "m", "127.0.0.1", 1, depends_on=("b",))
    b = Workload("b", "m", "127.0.0.1", 2, depends_on=("a",))
    with pytest.raises(ValueError, match="cycle"):
        Topology((a, b), entry="a").start_order()
    with pytest.raises(ValueError, match="unknown workload 'b'"):
        Topology((a,), entry="a").start_order()


@pytest.mark.parametrize("text", ["10.0.0.1", "127.0.0.0", "127.255.255.253", "localhost", "::1"])
def test_address_base_must_leave_room_in_loopback(text):
    with pytest.raises(ValueError):
        parse_address_base(text)


def test_address_base_accepts_loopback():
    assert str(parse_address_base("127.0.0.50")) == "127.0.0.50"
    assert str(parse_address_base("127.1.2.250")) == "127.1.2.250"
