"""Cross-resource checks: subsets, weights, duplicate hosts, unknown hosts and gateways."""

from __future__ import annotations

from pilot.config import problems as P
from pilot.config.parse import parse_text
from pilot.config.semantic import fqdn
from pilot.config.store import ConfigStore
from tests.unit.pilot.config.helpers import DR_ALL, VS_HEAD, errors, load

FILE = "/tmp/vs.yaml"


def apply(store: ConfigStore, text: str, file: str = FILE) -> list[P.Problem]:
    parsed = parse_text(text, file)
    assert parsed.ok, [str(p) for p in parsed.problems]
    return store.apply(parsed.configs, lines=parsed.lines)


def vs(route: str, name: str = "reviews", hosts: str = "[reviews]", extra: str = "") -> str:
    return (
        VS_HEAD.replace("name: reviews", f"name: {name}")
        + f"  hosts: {hosts}\n{extra}  http:\n  - route:\n{route}"
    )


def test_fqdn_short_names_as_istio():
    assert fqdn("reviews", "default", "cluster.local") == "reviews.default.svc.cluster.local"
    assert fqdn("reviews.other", "default", "cluster.local") == "reviews.other"
    assert fqdn("*", "default", "cluster.local") == "*"


def test_missing_subset_is_an_error_and_nothing_changes():
    store = ConfigStore()
    load(store, DR_ALL)
    before = store.snapshot()
    problems = apply(store, vs("    - destination: {host: reviews, subset: v9}\n"))
    [err] = [p for p in problems if p.is_error]
    assert err.code == P.SUBSET_NOT_FOUND
    assert err.path == "spec.http[0].route[0].destination.subset"
    assert err.line == 10
    assert "v1, v2, v3" in err.message
    assert store.snapshot() is before


def test_subset_without_any_destination_rule():
    store = ConfigStore()
    problems = apply(store, vs("    - destination: {host: reviews, subset: v1}\n"))
    assert "no DestinationRule for reviews.default.svc.cluster.local exists" in errors(problems)[0]


def test_subset_defined_in_the_same_request_is_fine():
    store = ConfigStore()
    text = DR_ALL.read_text() + "\n---\n" + vs("    - destination: {host: reviews, subset: v3}\n")
    assert errors(apply(store, text)) == []


def test_weights_must_sum_to_100():
    store = ConfigStore()
    load(store, DR_ALL)
    route = (
        "    - destination: {host: reviews, subset: v1}\n      weight: 70\n"
        "    - destination: {host: reviews, subset: v2}\n      weight: 20\n"
    )
    [err] = [p for p in apply(store, vs(route)) if p.is_error]
    assert err.code == P.WEIGHTS and err.path == "spec.http[0].route" and "sum to 90" in err.message
    ok = route.replace("weight: 20", "weight: 30")
    assert errors(apply(store, vs(ok))) == []


def test_two_virtual_services_for_one_host_is_an_error():
    store = ConfigStore()
    assert errors(apply(store, vs("    - destination: {host: reviews}\n"))) == []
    problems = apply(
        store, vs("    - destination: {host: reviews.default.svc.cluster.local}\n", name="reviews-2")
    )
    [err] = [p for p in problems if p.is_error]
    assert err.code == P.CONFLICTING_HOSTS
    assert err.resource == "VirtualService/default/reviews-2" and err.path == "spec.hosts[0]"
    assert "VirtualService/default/reviews" in err.message
    assert store.snapshot().get("VirtualService", "default", "reviews-2") is None


def test_same_host_on_different_gateways_is_fine():
    store = ConfigStore()
    assert (
        errors(apply(store, vs("    - destination: {host: reviews}\n", extra="  gateways: [gw-a]\n"))) == []
    )
    problems = apply(
        store, vs("    - destination: {host: reviews}\n", name="b", extra="  gateways: [gw-b]\n")
    )
    assert errors(problems) == []
    assert {p.code for p in problems} == {P.UNKNOWN_HOST, P.SUBSET_NOT_FOUND}  # gateway gw-b: a warning


def test_unknown_host_is_a_warning_and_a_service_entry_or_the_registry_makes_it_known():
    store = ConfigStore()
    [w] = apply(store, vs("    - destination: {host: reviews}\n"))
    assert w.level == P.WARNING and w.code == P.UNKNOWN_HOST and w.path.endswith("destination.host")
    known = ConfigStore(known_hosts=lambda: ["reviews.default.svc.cluster.local"])
    assert apply(known, vs("    - destination: {host: reviews}\n")) == []
    se = """apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext}
spec:
  hosts: ["*.example.com"]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: NONE
"""
    assert (
        apply(
            store,
            se
            + "---\n"
            + vs("    - destination: {host: api.example.com}\n", name="x", hosts="[api.example.com]"),
        )
        == []
    )


def test_removing_a_used_subset_warns():
    store = ConfigStore()
    load(store, DR_ALL)
    assert errors(apply(store, vs("    - destination: {host: reviews, subset: v3}\n"))) == []
    only_v1 = DR_ALL.read_text().split("---")[1].replace("  - name: v3\n    labels:\n      version: v3\n", "")
    problems = apply(store, only_v1)
    assert errors(problems) == []
    assert any(
        p.code == P.SUBSET_NOT_FOUND and p.resource == "VirtualService/default/reviews" for p in problems
    )


def test_service_entry_semantics():
    store = ConfigStore()
    text = """apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db}
spec:
  hosts: [db.example]
  ports: [{number: 5432, name: tcp, protocol: TCP}]
  resolution: STATIC
  endpoints: [{address: db.host, ports: {postgres: 5432}}]
"""
    paths = {p.path for p in apply(store, text) if p.is_error}
    assert paths == {"spec.endpoints[0].address", "spec.endpoints[0].ports['postgres']"}


def test_one_sidecar_without_selector_per_namespace():
    store = ConfigStore()
    sc = "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: NAME}\nspec:\n  egress: [{hosts: ['./*']}]\n"
    assert apply(store, sc.replace("NAME", "a")) == []
    assert [p.code for p in apply(store, sc.replace("NAME", "b"))] == [P.DUPLICATE]
