"""Router (gateway) proxies: listeners from Gateway servers, routes from the VirtualServices bound to them.

A Gateway applies to a router proxy when its ``selector`` labels are all among the proxy's labels
(``istio: ingressgateway``), in any namespace (Istio's default). Servers are grouped by port:

* HTTP/HTTP2/GRPC → listener ``0.0.0.0_<port>`` with an HCM on RDS ``http.<port>``. Its virtual hosts
  are the hosts of VirtualServices whose ``gateways`` name the Gateway (``<name>`` in the
  VirtualService's namespace, or ``<ns>/<name>``) and that a server host admits (``*``, ``*.x``,
  ``<ns>/<host>``); domains ``[host, host:*]``, or ``*``. Without any, a ``blackhole:<port>`` host
  answers 404 (Istio).
* HTTPS/TLS with ``tls.mode`` SIMPLE or MUTUAL → a filter chain per server matching its SNI hosts, with
  Istio's ``DownstreamTlsContext`` transport socket (credentialName via SDS ``kubernetes://<name>``, or
  the certificate files), HCM on RDS ``https.<port>.<port name>.<gateway>.<ns>``. **The Isthmus proxy has
  no TLS until issue 6 and NACKs these listeners**; ``gateway_warnings`` reports every such server.
* TLS PASSTHROUGH / AUTO_PASSTHROUGH → ``tls_inspector`` and SNI filter chains from the VirtualServices'
  ``tls`` routes, ``tcp_proxy`` to their destinations (no TLS termination: the proxy supports this).
* TCP → ``tcp_proxy`` from the bound VirtualServices' ``tcp`` routes.
"""

from __future__ import annotations

from typing import Any

from pilot.model.config import Config
from pilot.model.proxy import Proxy
from pilot.networking.filters import hcm, listener_filter, tcp_proxy
from pilot.networking.httproute import RouteContext, translate_http
from pilot.networking.index import Index, gateway_key, labels_match
from pilot.networking.listeners import bind_address
from pilot.networking.protos import DOWNSTREAM_TLS, TLS_INSPECTOR, typed
from pilot.serviceregistry.names import host_matches

HTTP_PROTOCOLS = ("HTTP", "HTTP2", "GRPC")


def gateways_for(idx: Index, proxy: Proxy) -> list[Config]:
    return [
        gw
        for gw in idx.gateways
        if gw.spec.get("selector") is not None and labels_match(gw.spec.get("selector"), proxy.labels)
    ]


def _servers_by_port(idx: Index, proxy: Proxy) -> dict[int, list[tuple[Config, dict[str, Any]]]]:
    out: dict[int, list[tuple[Config, dict[str, Any]]]] = {}
    for gw in gateways_for(idx, proxy):
        for server in gw.spec.get("servers") or []:
            out.setdefault(int(server["port"]["number"]), []).append((gw, server))
    return out


def _protocol(server: dict[str, Any]) -> str:
    return str(server["port"].get("protocol") or "HTTP").upper()


def _tls_mode(server: dict[str, Any]) -> str:
    return str((server.get("tls") or {}).get("mode") or "").upper()


def _terminates_http(server: dict[str, Any]) -> bool:
    proto = _protocol(server)
    return proto in HTTP_PROTOCOLS or (
        proto == "HTTPS" and _tls_mode(server) in ("SIMPLE", "MUTUAL", "ISTIO_MUTUAL")
    )


def _server_admits(server_hosts: list[str], vs: Config, host: str) -> str | None:
    """The virtual host name a server host admits for a VirtualService host, or None."""
    for entry in server_hosts:
        ns, sep, pattern = str(entry).rpartition("/")
        if sep and ns not in ("*", vs.namespace) and not (ns == "." and vs.namespace == vs.namespace):
            continue
        if host_matches(pattern, host):
            return host
        if host_matches(host, pattern):
            return pattern
    return None


def _bound_virtual_services(idx: Index, gw: Config) -> list[tuple[Config, list[str]]]:
    key = gateway_key(gw.name, gw.namespace)
    return [(b.config, b.hosts) for b in idx.virtual_services.get(key, [])]


def _route_config(idx: Index, proxy: Proxy, name: str, port: int, servers: list[tuple[Config, dict]]) -> dict:
    vhosts: dict[str, dict[str, Any]] = {}
    for gw, server in servers:
        gw_key = gateway_key(gw.name, gw.namespace)
        ctx = RouteContext(idx, proxy, gw_key, port)
        for vs, hosts in _bound_virtual_services(idx, gw):
            routes = None
            for host in hosts:
                vhost_host = _server_admits(server.get("hosts") or [], vs, host)
                if vhost_host is None:
                    continue
                if routes is None:
                    routes = translate_http(ctx, vs)
                vh = vhosts.setdefault(
                    vhost_host,
                    {
                        "name": f"{vhost_host}:{port}",
                        "domains": ["*"] if vhost_host == "*" else [vhost_host, f"{vhost_host}:*"],
                        "routes": [],
                        "include_request_attempt_count": True,
                    },
                )
                vh["routes"].extend(routes)
    if not vhosts:
        vhosts["blackhole"] = {
            "name": f"blackhole:{port}",
            "domains": ["*"],
            "routes": [{"name": "default", "match": {"prefix": "/"}, "direct_response": {"status": 404}}],
            "include_request_attempt_count": True,
        }
    return {"name": name, "virtual_hosts": [vhosts[h] for h in sorted(vhosts)], "validate_clusters": False}


def _https_route_name(port: int, gw: Config, server: dict[str, Any]) -> str:
    return f"https.{port}.{server['port'].get('name') or port}.{gw.name}.{gw.namespace}"


def gateway_route_configs(idx: Index, proxy: Proxy, names: set[str] | None) -> list[dict[str, Any]]:
    out = []
    for port, servers in sorted(_servers_by_port(idx, proxy).items()):
        plain = [(g, s) for g, s in servers if _protocol(s) in HTTP_PROTOCOLS]
        if plain:
            name = f"http.{port}"
            if names is None or name in names:
                out.append(_route_config(idx, proxy, name, port, plain))
        for gw, server in servers:
            if _protocol(server) == "HTTPS" and _terminates_http(server):
                name = _https_route_name(port, gw, server)
                if names is None or name in names:
                    out.append(_route_config(idx, proxy, name, port, [(gw, server)]))
    return out


def _sni(server: dict[str, Any]) -> list[str]:
    return sorted(
        {str(h).rpartition("/")[2] for h in server.get("hosts") or [] if str(h).rpartition("/")[2] != "*"}
    )


def _downstream_tls(server: dict[str, Any]) -> dict[str, Any]:
    tls = server.get("tls") or {}
    common: dict[str, Any] = {}
    if tls.get("credentialName"):
        common["tls_certificate_sds_secret_configs"] = [
            {
                "name": f"kubernetes://{tls['credentialName']}",
                "sds_config": {"ads": {}, "resource_api_version": "V3"},
            }
        ]
    elif tls.get("serverCertificate"):
        common["tls_certificates"] = [
            {
                "certificate_chain": {"filename": tls["serverCertificate"]},
                "private_key": {"filename": tls.get("privateKey", "")},
            }
        ]
    body: dict[str, Any] = {"common_tls_context": common}
    if _tls_mode(server) == "MUTUAL":
        body["require_client_certificate"] = True
        if tls.get("caCertificates"):
            common["validation_context"] = {"trusted_ca": {"filename": tls["caCertificates"]}}
    return {"name": "envoy.transport_sockets.tls", "typed_config": typed(DOWNSTREAM_TLS, body)}


def _routes_to(
    idx: Index, proxy: Proxy, gw: Config, port: int, kind: str, server: dict
) -> list[dict[str, Any]]:
    """Filter chains for VirtualService ``tls``/``tcp`` routes bound to the gateway."""
    chains = []
    gw_key = gateway_key(gw.name, gw.namespace)
    ctx = RouteContext(idx, proxy, gw_key, port)
    stat = f"outbound_0.0.0.0_{port}"
    for vs, _ in _bound_virtual_services(idx, gw):
        for r in vs.spec.get(kind) or []:
            matches = r.get("match") or [{}]
            for m in matches:
                if m.get("port") and int(m["port"]) != port:
                    continue
                weighted = []
                for d in r.get("route") or []:
                    cluster, _, _ = ctx.cluster_for(d["destination"], vs.namespace)
                    weighted.append((cluster, int(d.get("weight") or 100)))
                if not weighted:
                    continue
                match = {"server_names": [str(h) for h in m.get("sniHosts") or []]} if kind == "tls" else {}
                if kind == "tls" and not match["server_names"]:
                    match = {"server_names": _sni(server)} if _sni(server) else {}
                chains.append({"filter_chain_match": match, "filters": [tcp_proxy(stat, weighted=weighted)]})
    return chains


def gateway_listeners(idx: Index, proxy: Proxy) -> list[dict[str, Any]]:
    listeners = []
    for port, servers in sorted(_servers_by_port(idx, proxy).items()):
        stat = f"outbound_0.0.0.0_{port}"
        chains: list[dict[str, Any]] = []
        tls_inspector = False
        if any(_protocol(s) in HTTP_PROTOCOLS for _, s in servers):
            chains.append({"filters": [hcm(stat, rds=f"http.{port}")]})
        for gw, server in servers:
            proto = _protocol(server)
            if proto == "HTTPS" and _terminates_http(server):
                tls_inspector = True
                chain = {
                    "filters": [hcm(stat, rds=_https_route_name(port, gw, server))],
                    "transport_socket": _downstream_tls(server),
                }
                if _sni(server):
                    chain = {"filter_chain_match": {"server_names": _sni(server)}, **chain}
                chains.append(chain)
            elif proto in ("HTTPS", "TLS"):
                tls_inspector = True
                chains.extend(_routes_to(idx, proxy, gw, port, "tls", server))
            elif proto == "TCP":
                chains.extend(_routes_to(idx, proxy, gw, port, "tcp", server))
        unique = []
        seen = set()
        for c in chains:
            key = repr(c.get("filter_chain_match") or {})
            if key not in seen:
                seen.add(key)
                unique.append(c)
        if not unique:
            continue
        listener: dict[str, Any] = {
            "name": f"0.0.0.0_{port}",
            # local mode (INTERCEPTION_MODE NONE): the gateway's own IP, so two meshes can share a host
            "address": {"socket_address": {"address": bind_address(proxy), "port_value": port}},
            "traffic_direction": "OUTBOUND",
            "filter_chains": unique,
        }
        if tls_inspector:
            listener["listener_filters"] = [
                listener_filter("envoy.filters.listener.tls_inspector", TLS_INSPECTOR)
            ]
        listeners.append(listener)
    return listeners


def gateway_warnings(gw: Config) -> list[str]:
    out = []
    for i, server in enumerate(gw.spec.get("servers") or []):
        where = f"Gateway/{gw.namespace}/{gw.name}: servers[{i}]"
        if _protocol(server) == "HTTPS" and _terminates_http(server):
            out.append(
                f"{where}.tls: mode {_tls_mode(server)} is emitted as Istio does (DownstreamTlsContext); "
                f"the Isthmus proxy rejects it until issue 6 (TLS)"
            )
        if (server.get("tls") or {}).get("httpsRedirect"):
            out.append(f"{where}.tls.httpsRedirect: the proxy has no require_tls yet; not emitted")
    return out
