"""Only affected proxies are pushed: Sidecar scope, gateways, root namespace, EDS by watched cluster."""

from pilot.model.config import Config, ConfigKey, ConfigSnapshot
from pilot.model.proxy import parse_node
from pilot.model.push_context import PushContext
from pilot.model.service import Port, RegistrySnapshot, Service
from pilot.xds.affected import EDS_ONLY, FULL, push_scope
from pilot.xds.debounce import PushRequest, config_push, endpoint_push, service_push


def cfg(kind, ns, name, spec):
    return Config(kind, "networking.istio.io", "v1", ns, name, spec)


SIDECAR_BOOKINFO = cfg("Sidecar", "bookinfo", "default", {"egress": [{"hosts": ["./*", "istio-system/*"]}]})
SE_EXT = cfg("ServiceEntry", "other", "ext", {"hosts": ["api.example.com"]})
PUSH = PushContext(
    ConfigSnapshot({c.key: c for c in [SIDECAR_BOOKINFO, SE_EXT]}),
    RegistrySnapshot(services=(Service("db.other.svc.cluster.local", "other", (Port("tcp", 5432, "TCP"),)),)),
)
SCOPED = parse_node("sidecar~10.0.0.1~reviews-1.bookinfo~bookinfo.svc.cluster.local")
OPEN = parse_node("sidecar~10.0.0.2~web-1.web~web.svc.cluster.local")
GATEWAY = parse_node("router~10.0.0.3~gw-1.istio-system~istio-system.svc.cluster.local")
NONE = frozenset()


def scope(proxy, request, eds=NONE, wildcard=False):
    return push_scope(proxy, PUSH, request, eds, wildcard)


def test_unknown_scope_pushes_everyone():
    assert scope(SCOPED, PushRequest()) == FULL


def test_sidecar_scope_hides_other_namespaces():
    change = config_push([ConfigKey("VirtualService", "other", "x")], 0)
    assert scope(SCOPED, change) is None
    assert scope(OPEN, change) == FULL  # no Sidecar: sees everything, as in Istio
    assert scope(SCOPED, config_push([ConfigKey("VirtualService", "bookinfo", "x")], 0)) == FULL
    assert scope(SCOPED, config_push([ConfigKey("DestinationRule", "istio-system", "x")], 0)) == FULL


def test_service_entry_and_registry_services_by_host():
    assert scope(SCOPED, config_push([SE_EXT.key], 0)) is None
    assert scope(OPEN, config_push([SE_EXT.key], 0)) == FULL
    assert scope(SCOPED, service_push(["db.other.svc.cluster.local"], 0)) is None
    assert scope(OPEN, service_push(["db.other.svc.cluster.local"], 0)) == FULL


def test_gateways_only_for_routers_and_sidecar_changes_for_their_namespace():
    gw = config_push([ConfigKey("Gateway", "bookinfo", "gw")], 0)
    assert scope(GATEWAY, gw) == FULL and scope(SCOPED, gw) is None
    sc = config_push([ConfigKey("Sidecar", "web", "default")], 0)
    assert scope(OPEN, sc) == FULL and scope(SCOPED, sc) is None


def test_endpoint_changes_go_as_eds_to_proxies_watching_the_host():
    change = endpoint_push(["ratings.bookinfo.svc.cluster.local"], 0)
    watching = frozenset({"outbound|9080||ratings.bookinfo.svc.cluster.local"})
    assert scope(SCOPED, change, watching) == EDS_ONLY
    assert scope(SCOPED, change, frozenset({"outbound|9080||details.bookinfo.svc.cluster.local"})) is None
    assert scope(SCOPED, change, NONE, wildcard=True) == EDS_ONLY
    # merged with a config change the proxy cannot see: still only EDS for it
    merged = change.merge(config_push([ConfigKey("VirtualService", "other", "x")], 0))
    assert scope(SCOPED, merged, watching) == EDS_ONLY
