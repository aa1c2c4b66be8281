"""Listeners (LDS) for sidecars, as Istio builds them (router: ``gateway``; gRPC: ``grpc``).

* ``virtualOutbound`` on ``<bind>:15001`` with ``use_original_dst``: connections captured by iptables
  are handed to the listener of their original destination port; a connection to 15001 itself is
  blackholed (no loop); anything else goes to ``PassthroughCluster`` (ALLOW_ANY) or
  ``BlackHoleCluster`` (REGISTRY_ONLY), following the Sidecar's or the mesh's outboundTrafficPolicy.
* ``<bind>_<port>`` for every outbound service port, ``bind_to_port: false``: HTTP ports carry an HCM
  with RDS route ``"<port>"``; TCP services get ``tcp_proxy`` filter chains (matched by VIP when the
  service has one; a VirtualService ``tcp`` route may split by weight); TLS services get SNI chains
  (``tls_inspector``) from the VirtualService ``tls`` routes, or the service host.
* ``virtualInbound`` on ``<bind>:15006`` with the ``original_dst`` listener filter: filter chains per
  workload port (destination_port), HTTP → HCM (RBAC filters, XFCC, path normalisation) with an inline
  route to ``inbound|<port>||``, TCP → network RBAC + ``tcp_proxy``; anything else to
  ``InboundPassthroughClusterIpv4``. The chains follow the port's PeerAuthentication mode: STRICT
  mTLS, PERMISSIVE mTLS or plaintext by ``tls_inspector``, DISABLE plaintext.

``<bind>`` is ``0.0.0.0``, as Istio, unless the node metadata says ``INTERCEPTION_MODE: NONE`` (Istio's
key): then there is no iptables capture, and the listeners bind the workload's own IP so that several
proxies on one host can each use the standard ports (Isthmus local mode).

In that mode the app reaches its sidecar through ``HTTP_PROXY=http://<ip>:15001``, so nothing arrives
with an original destination: ``virtualOutbound`` is kept (``bind_to_port: false``) and ``<ip>:15001``
belongs to an HTTP proxy listener ``<ip>_15001``, what Istio builds for a Sidecar egress listener whose
port protocol is ``HTTP_PROXY``: an HCM on RDS ``http_proxy`` holding the virtual hosts of every visible
service on every HTTP port (requests arrive in absolute form, ``GET http://reviews:9080/...``, and the
proxy's codec fills ``:authority`` from the URL).

Inbound in that mode (Istio's Sidecar ``ingress`` listeners, ``port`` + ``defaultEndpoint``): when the
node metadata also carries ``ISTHMUS_APP_ADDRESS`` (the app listens there, not on the workload IP), the
sidecar binds ``<ip>:<port>`` for every workload port with an ``INBOUND`` listener ``<ip>_<port>``: the
same PeerAuthentication chains and HCM (RBAC, XFCC, telemetry) as ``virtualInbound``, routing to
``inbound|<port>||`` whose endpoint is ``<app address>:<port>``. Callers' sidecars then reach the peer
sidecar at ``<ip>:<port>`` (the registry endpoint) with auto mTLS. The outbound port listener of the
same name (``bind_to_port: false``, reachable only through capture) is left out for those ports.
"""

from __future__ import annotations

from typing import Any

from envoy.config.listener.v3 import listener_pb2

from pilot.model.proxy import GRPC, ROUTER, Proxy
from pilot.model.push_context import PushContext
from pilot.model.service import Service
from pilot.networking import protos
from pilot.networking.authz import http_rbac_filters, network_rbac_filters
from pilot.networking.clusters import workload_ports
from pilot.networking.filters import INBOUND_HCM_OPTIONS, hcm, listener_filter, tcp_proxy
from pilot.networking.httproute import RouteContext
from pilot.networking.index import (
    Index,
    index_of,
    outbound_traffic_policy,
    virtual_service_for_host,
    visible_services,
)
from pilot.networking.mtls import DISABLE, PERMISSIVE, STRICT, effective_mtls
from pilot.networking.names import (
    BLACKHOLE_CLUSTER,
    INBOUND_PASSTHROUGH_CLUSTER,
    PASSTHROUGH_CLUSTER,
    VIRTUAL_INBOUND,
    VIRTUAL_INBOUND_PORT,
    VIRTUAL_OUTBOUND,
    VIRTUAL_OUTBOUND_PORT,
    inbound_cluster,
    outbound_cluster,
)
from pilot.networking.postprocess import finish_listeners
from pilot.networking.protos import ORIGINAL_DST, TLS_INSPECTOR
from pilot.networking.routes import HTTP_PROXY_ROUTE
from pilot.networking.tls import ALPN_INBOUND_HTTP, ALPN_INBOUND_TCP, istio_mutual_downstream
from pilot.serviceregistry.names import is_http


def interception_none(proxy: Proxy) -> bool:
    return str(proxy.metadata.get("INTERCEPTION_MODE") or "REDIRECT").upper() == "NONE"


def bind_address(proxy: Proxy) -> str:
    if interception_none(proxy) and proxy.ip_addresses:
        return proxy.ip_addresses[0]
    return "0.0.0.0"


def app_address(proxy: Proxy) -> str:
    """The app's private address in local mode (``ISTHMUS_APP_ADDRESS``), or "" (the app is on the
    workload IP, or capture redirects inbound traffic)."""
    if not interception_none(proxy):
        return ""
    return str(proxy.metadata.get("ISTHMUS_APP_ADDRESS") or "")


def _address(ip: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": ip, "port_value": port}}


def virtual_outbound(proxy: Proxy, policy: str) -> dict[str, Any]:
    bind = bind_address(proxy)
    catchall = PASSTHROUGH_CLUSTER if policy != "REGISTRY_ONLY" else BLACKHOLE_CLUSTER
    listener: dict[str, Any] = {
        "name": VIRTUAL_OUTBOUND,
        "address": _address(bind, VIRTUAL_OUTBOUND_PORT),
        "use_original_dst": True,
        "traffic_direction": "OUTBOUND",
        "filter_chains": [
            {
                "name": "virtualOutbound-blackhole",
                "filter_chain_match": {"destination_port": VIRTUAL_OUTBOUND_PORT},
                "filters": [tcp_proxy(BLACKHOLE_CLUSTER, BLACKHOLE_CLUSTER)],
            },
            {"name": "virtualOutbound-catchall-tcp", "filters": [tcp_proxy(catchall, catchall)]},
        ],
    }
    if interception_none(proxy):
        listener["bind_to_port"] = False  # <ip>:15001 is the HTTP proxy listener's (see http_proxy_listener)
    return listener


def http_proxy_listener(proxy: Proxy) -> dict[str, Any]:
    """Istio's HTTP_PROXY egress listener on ``<ip>:15001``: absolute-form requests from an app whose
    HTTP_PROXY points here, routed by RDS ``http_proxy`` (every visible service, every HTTP port)."""
    bind = bind_address(proxy)
    name = f"{bind}_{VIRTUAL_OUTBOUND_PORT}"
    return {
        "name": name,
        "address": _address(bind, VIRTUAL_OUTBOUND_PORT),
        "traffic_direction": "OUTBOUND",
        "filter_chains": [{"filters": [hcm(f"outbound_{name}", rds=HTTP_PROXY_ROUTE)]}],
    }


def _tcp_route_clusters(idx: Index, proxy: Proxy, svc: Service, port: int) -> list[tuple[str, int]]:
    bound = virtual_service_for_host(idx, svc.hostname, proxy.namespace)
    if bound is not None:
        for tcp in bound.config.spec.get("tcp") or []:
            ports = [m.get("port") for m in tcp.get("match") or [] if m.get("port")]
            if ports and port not in [int(p) for p in ports]:
                continue
            ctx = RouteContext(idx, proxy, "mesh", port)
            out = []
            for d in tcp.get("route") or []:
                cluster, _, _ = ctx.cluster_for(d["destination"], bound.config.namespace)
                out.append((cluster, int(d.get("weight") or 100)))
            if out:
                return out
    return [(outbound_cluster(port, "", svc.hostname), 100)]


def _tls_chains(idx: Index, proxy: Proxy, svc: Service, port: int, stat: str) -> list[dict[str, Any]]:
    bound = virtual_service_for_host(idx, svc.hostname, proxy.namespace)
    chains = []
    if bound is not None:
        ctx = RouteContext(idx, proxy, "mesh", port)
        for tls in bound.config.spec.get("tls") or []:
            for m in tls.get("match") or []:
                if m.get("port") and int(m["port"]) != port:
                    continue
                weighted = []
                for d in tls.get("route") or []:
                    cluster, _, _ = ctx.cluster_for(d["destination"], bound.config.namespace)
                    weighted.append((cluster, int(d.get("weight") or 100)))
                chains.append(
                    {
                        "filter_chain_match": {"server_names": [str(h) for h in m.get("sniHosts") or []]},
                        "filters": [tcp_proxy(stat, weighted=weighted)],
                    }
                )
    if not chains:
        chains.append(
            {
                "filter_chain_match": {"server_names": [svc.hostname]},
                "filters": [tcp_proxy(stat, outbound_cluster(port, "", svc.hostname))],
            }
        )
    return chains


def outbound_port_listeners(idx: Index, proxy: Proxy) -> list[dict[str, Any]]:
    bind = bind_address(proxy)
    by_port: dict[int, list[tuple[Service, str]]] = {}
    for svc in visible_services(idx, proxy):
        for p in svc.ports:
            by_port.setdefault(p.number, []).append((svc, p.protocol.upper()))
    listeners = []
    for port in sorted(by_port):
        if port in (VIRTUAL_OUTBOUND_PORT, VIRTUAL_INBOUND_PORT):
            continue
        name = f"{bind}_{port}"
        stat = f"outbound_{name}"
        entries = by_port[port]
        chains: list[dict[str, Any]] = []
        listener_filters = []
        seen_matches: set[str] = set()
        has_http = any(is_http(proto) for _, proto in entries)
        for svc, proto in entries:
            if is_http(proto):
                continue
            if proto in ("TLS", "HTTPS"):
                listener_filters = [listener_filter("envoy.filters.listener.tls_inspector", TLS_INSPECTOR)]
                new = _tls_chains(idx, proxy, svc, port, stat)
            else:
                weighted = _tcp_route_clusters(idx, proxy, svc, port)
                match: dict[str, Any] = {}
                if svc.addresses:
                    match["prefix_ranges"] = [
                        {
                            "address_prefix": a.split("/")[0],
                            "prefix_len": int(a.split("/")[1]) if "/" in a else 32,
                        }
                        for a in svc.addresses
                    ]
                elif has_http:
                    continue  # Istio: an HTTP service owns a VIP-less port; the TCP service is not reachable here
                new = (
                    [{"filter_chain_match": match, "filters": [tcp_proxy(stat, weighted=weighted)]}]
                    if match
                    else [{"filters": [tcp_proxy(stat, weighted=weighted)]}]
                )
            for c in new:
                key = repr(c.get("filter_chain_match") or {})
                if key in seen_matches:
                    continue  # first service wins a duplicate match (Istio reports a conflict)
                seen_matches.add(key)
                chains.append(c)
        if has_http and "{}" not in seen_matches:
            chains.append({"filters": [hcm(stat, rds=str(port))]})
        if not chains:
            continue
        listener = {
            "name": name,
            "address": _address(bind, port),
            "bind_to_port": False,
            "traffic_direction": "OUTBOUND",
            "filter_chains": chains,
        }
        if listener_filters:
            listener["listener_filters"] = listener_filters
        listeners.append(listener)
    return listeners


def _inbound_filters(idx: Index, proxy: Proxy, port: int, proto: str) -> list[dict[str, Any]]:
    cluster = inbound_cluster(port)
    stat = f"inbound_{bind_address(proxy)}_{port}"
    if not is_http(proto):
        return [*network_rbac_filters(idx, proxy.namespace, proxy.labels), tcp_proxy(stat, cluster)]
    route_config = {
        "name": cluster,
        "virtual_hosts": [
            {
                "name": f"inbound|http|{port}",
                "domains": ["*"],
                "routes": [
                    {
                        "name": "default",
                        "match": {"prefix": "/"},
                        "route": {"cluster": cluster, "timeout": "0s"},
                    }
                ],
            }
        ],
        "validate_clusters": False,
    }
    authz = http_rbac_filters(idx, proxy.namespace, proxy.labels)
    return [hcm(stat, route_config=route_config, authz=authz, options=INBOUND_HCM_OPTIONS)]


def mtls_chains(
    name: str, match: dict[str, Any], filters: list[dict[str, Any]], mode: str, alpn: list[str]
) -> list[dict[str, Any]]:
    """The inbound filter chains of one PeerAuthentication mode: STRICT one mTLS chain (a plaintext
    client fails the handshake), PERMISSIVE a TLS chain and a plaintext chain told apart by
    ``tls_inspector``'s transport protocol, DISABLE one plaintext chain."""
    if mode == STRICT:
        return [
            {
                "name": name,
                "filter_chain_match": dict(match),
                "filters": filters,
                "transport_socket": istio_mutual_downstream(alpn),
            }
        ]
    if mode == DISABLE:
        return [{"name": name, "filter_chain_match": dict(match), "filters": filters}]
    return [
        {
            "name": name,
            "filter_chain_match": {**match, "transport_protocol": "tls"},
            "filters": filters,
            "transport_socket": istio_mutual_downstream(alpn),
        },
        {
            "name": name,
            "filter_chain_match": {**match, "transport_protocol": "raw_buffer"},
            "filters": filters,
        },
    ]


def _with_tls_inspector(listener: dict[str, Any], chains: list[dict[str, Any]]) -> dict[str, Any]:
    if any("transport_protocol" in c.get("filter_chain_match", {}) for c in chains):
        listener["listener_filters"] = [
            *listener.get("listener_filters", []),
            listener_filter("envoy.filters.listener.tls_inspector", TLS_INSPECTOR),
        ]
    return listener


def ingress_listeners(idx: Index, proxy: Proxy) -> list[dict[str, Any]]:
    """Local mode with ``ISTHMUS_APP_ADDRESS``: one bound ``INBOUND`` listener ``<ip>_<port>`` per
    workload port (Istio's Sidecar ingress listener), chains by the port's PeerAuthentication mode."""
    if not app_address(proxy):
        return []
    bind = bind_address(proxy)
    peer = effective_mtls(idx, proxy.namespace, proxy.labels)
    out = []
    for port, proto in workload_ports(idx, proxy):
        alpn = ALPN_INBOUND_HTTP if is_http(proto) else ALPN_INBOUND_TCP
        filters = _inbound_filters(idx, proxy, port, proto)
        chains = mtls_chains(inbound_cluster(port), {}, filters, peer.mode_for(port), alpn)
        listener = {
            "name": f"{bind}_{port}",
            "address": _address(bind, port),
            "traffic_direction": "INBOUND",
            "filter_chains": chains,
        }
        out.append(_with_tls_inspector(listener, chains))
    return out


def virtual_inbound(idx: Index, proxy: Proxy) -> dict[str, Any]:
    """Per workload port, the chains of its PeerAuthentication mode (``mtls``) around an HCM with the
    workload's RBAC filters (``authz``) or RBAC + ``tcp_proxy``. Connections to other ports pass through
    under the workload-level mode."""
    bind = bind_address(proxy)
    peer = effective_mtls(idx, proxy.namespace, proxy.labels)
    chains = []
    for port, proto in workload_ports(idx, proxy):
        alpn = ALPN_INBOUND_HTTP if is_http(proto) else ALPN_INBOUND_TCP
        filters = _inbound_filters(idx, proxy, port, proto)
        chains += mtls_chains(
            inbound_cluster(port), {"destination_port": port}, filters, peer.mode_for(port), alpn
        )
    passthrough = [
        *network_rbac_filters(idx, proxy.namespace, proxy.labels),
        tcp_proxy(INBOUND_PASSTHROUGH_CLUSTER, INBOUND_PASSTHROUGH_CLUSTER),
    ]
    default_chain: dict[str, Any] = {"name": "virtualInbound-catchall", "filters": passthrough}
    if peer.mode == STRICT:
        default_chain["transport_socket"] = istio_mutual_downstream(ALPN_INBOUND_TCP)
    elif peer.mode == PERMISSIVE:
        chains += [
            {
                "name": "virtualInbound-catchall-tls",
                "filter_chain_match": {"transport_protocol": "tls"},
                "filters": passthrough,
                "transport_socket": istio_mutual_downstream(ALPN_INBOUND_TCP),
            }
        ]
    listener_filters = [listener_filter("envoy.filters.listener.original_dst", ORIGINAL_DST)]
    if any("transport_protocol" in c.get("filter_chain_match", {}) for c in chains):
        listener_filters.append(listener_filter("envoy.filters.listener.tls_inspector", TLS_INSPECTOR))
    return {
        "name": VIRTUAL_INBOUND,
        "address": _address(bind, VIRTUAL_INBOUND_PORT),
        "traffic_direction": "INBOUND",
        "listener_filters": listener_filters,
        "filter_chains": chains,
        "default_filter_chain": default_chain,
    }


def sidecar_listeners(idx: Index, push: PushContext, proxy: Proxy) -> list[dict[str, Any]]:
    policy = outbound_traffic_policy(idx, proxy, push.mesh.outbound_traffic_policy)
    local = [http_proxy_listener(proxy)] if interception_none(proxy) else []
    ingress = ingress_listeners(idx, proxy)
    taken = {lst["name"] for lst in ingress}
    outbound = [lst for lst in outbound_port_listeners(idx, proxy) if lst["name"] not in taken]
    return [
        virtual_outbound(proxy, policy),
        *local,
        *outbound,
        *ingress,
        virtual_inbound(idx, proxy),
    ]


def build_listeners(
    proxy: Proxy, push: PushContext, names: set[str] | None = None
) -> list[listener_pb2.Listener]:
    idx = index_of(push)
    if proxy.type == ROUTER:
        from pilot.networking.gateway import gateway_listeners

        dicts = gateway_listeners(idx, proxy)
    elif proxy.type == GRPC:
        from pilot.networking.grpc import grpc_listeners

        dicts = grpc_listeners(idx, proxy, names)
    else:
        dicts = sidecar_listeners(idx, push, proxy)
    dicts = finish_listeners(dicts, proxy, push)  # mesh providers (mixer), then EnvoyFilter patches
    return [protos.listener(d) for d in dicts if names is None or d["name"] in names or proxy.type == GRPC]
