"""The Istio kinds pilot accepts, their API groups, versions, plural names and field schemas.

Every field Istio defines for these kinds is listed. A field marked ``unsupported`` is a known Istio
field that Isthmus does not implement yet: using it is an error ("... is not supported by Isthmus yet")
rather than being silently ignored. Fields Istio has deprecated but still accepts are listed too.
Security kinds and EnvoyFilter are validated fully here; pilot/networking translates them and reports
what it cannot apply.
Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from pilot.config import problems as P
from pilot.config.regex import re2_error
from pilot.config.schema import (
    AnyValue,
    Bool,
    Duration,
    F,
    Int,
    Issue,
    ListOf,
    MapOf,
    Num,
    Obj,
    Schema,
    Str,
    join,
)

NETWORKING = "networking.istio.io"
SECURITY = "security.istio.io"

# ---------------------------------------------------------------- scalar helpers

DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_SUBDOMAIN = rf"{DNS1123_LABEL}(\.{DNS1123_LABEL})*"
_HOST_LABEL = r"[A-Za-z0-9]([-A-Za-z0-9_]*[A-Za-z0-9])?"


def _is_ip(s: str) -> bool:
    try:
        ipaddress.ip_address(s)
        return True
    except ValueError:
        return False


def _is_cidr(s: str) -> bool:
    try:
        ipaddress.ip_network(s, strict=False)
        return True
    except ValueError:
        return False


def host_error(host: str, *, wildcard: bool = True) -> str | None:
    """Istio's host rules: a DNS name, optionally with a leading '*' label; '*' alone matches all."""
    if wildcard and host == "*":
        return None
    if _is_ip(host):
        return None
    name = host
    if host.startswith("*"):
        if not wildcard:
            return f"host {host!r}: wildcards are not allowed here"
        if not host.startswith("*."):
            return f"host {host!r}: a wildcard must be the whole first label, as in *.example.com"
        name = host[2:]
    if len(name) > 253 or not all(
        re.fullmatch(_HOST_LABEL, lab) and len(lab) <= 63 for lab in name.split(".")
    ):
        return f"host {host!r} is not a valid DNS name"
    return None


def _gateway_host_error(host: str) -> str | None:
    # Gateway server hosts are "[namespace/]dnsName" where namespace may be "*", "." or "~".
    ns, _, name = host.rpartition("/")
    if ns and ns not in ("*", ".", "~") and not re.fullmatch(DNS1123_LABEL, ns):
        return f"host {host!r}: {ns!r} is not a valid namespace"
    return host_error(name)


def _regex(s: str) -> str | None:
    return re2_error(s)


def _cidr_or_ip(s: str) -> str | None:
    return None if _is_cidr(s) else f"{s!r} is not an IP address or CIDR block"


def _ip_or_host(s: str) -> str | None:
    if s.startswith("unix://"):
        return None
    return None if _is_ip(s) else host_error(s, wildcard=False)


def _export_to(v) -> str | None:
    if isinstance(v, list) and all(x == "*" for x in v):
        return None
    return "exportTo other than ['*'] is not supported by Isthmus yet (every config is visible mesh-wide)"


HOST = Str(check=lambda s: host_error(s, wildcard=False))
WILDCARD_HOST = Str(check=host_error)
PORT = Int(1, 65535)
PERCENT = Obj({"value": F(Num(0, 100))})
LABELS = MapOf(Str())
STRING_MATCH = Obj(
    {"exact": F(Str()), "prefix": F(Str()), "regex": F(Str(check=_regex, code=P.INVALID_REGEX))},
    need_one_of=(("exact", "prefix", "regex"),),
)
EXPORT_TO = F(ListOf(Str()), supported_if=_export_to)
WORKLOAD_SELECTOR = Obj({"labels": F(LABELS)})
TARGET_REF = Obj(
    {
        "group": F(Str()),
        "kind": F(Str(), required=True),
        "name": F(Str(), required=True),
        "namespace": F(Str()),
    }
)
PROTOCOLS = ("HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "MONGO", "MYSQL", "REDIS", "TCP", "TLS", "UDP")


def _protocol(s: str) -> str | None:
    return None if s.upper() in PROTOCOLS else f"{s!r} is not one of {', '.join(PROTOCOLS)}"


# ---------------------------------------------------------------- VirtualService

PORT_SELECTOR = Obj({"number": F(PORT)})
DESTINATION = Obj(
    {
        "host": F(HOST, required=True),
        "subset": F(Str(pattern=DNS1123_LABEL, what="subset name")),
        "port": F(PORT_SELECTOR),
    }
)
HEADER_OPS = Obj({"set": F(MapOf(Str())), "add": F(MapOf(Str())), "remove": F(ListOf(Str()))})
HEADERS = Obj({"request": F(HEADER_OPS), "response": F(HEADER_OPS)})
HTTP_MATCH = Obj(
    {
        "name": F(Str()),
        "uri": F(STRING_MATCH),
        "scheme": F(STRING_MATCH, unsupported=True),
        "method": F(STRING_MATCH),
        "authority": F(STRING_MATCH),
        "headers": F(MapOf(STRING_MATCH)),
        "port": F(PORT),
        "sourceLabels": F(LABELS),
        "gateways": F(ListOf(Str())),
        "queryParams": F(MapOf(STRING_MATCH)),
        "ignoreUriCase": F(Bool()),
        "withoutHeaders": F(MapOf(STRING_MATCH)),
        "sourceNamespace": F(Str(), unsupported=True),
        "statPrefix": F(Str(), unsupported=True),
    }
)
HTTP_ROUTE_DESTINATION = Obj(
    {"destination": F(DESTINATION, required=True), "weight": F(Int(0)), "headers": F(HEADERS)}
)
HTTP_REDIRECT = Obj(
    {
        "uri": F(Str()),
        "authority": F(Str()),
        "port": F(PORT),
        "derivePort": F(Str(enum=("FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT")), unsupported=True),
        "scheme": F(Str()),
        "redirectCode": F(Int(300, 399)),
    },
    one_of=(("port", "derivePort"),),
)
HTTP_REWRITE = Obj(
    {
        "uri": F(Str()),
        "authority": F(Str()),
        "uriRegexRewrite": F(
            Obj({"match": F(Str(check=_regex, code=P.INVALID_REGEX)), "rewrite": F(Str())}), unsupported=True
        ),
    }
)
HTTP_RETRY = Obj(
    {
        "attempts": F(Int(0)),
        "perTryTimeout": F(Duration(0.001)),
        "retryOn": F(Str()),
        "retryRemoteLocalities": F(Bool(), unsupported=True),
        "retryIgnorePreviousHosts": F(Bool(), unsupported=True),
        "backoff": F(Duration(0.001), unsupported=True),
    }
)
FAULT_DELAY = Obj(
    {
        "fixedDelay": F(Duration(0.001)),
        "exponentialDelay": F(Duration(0.001), unsupported=True),
        "percentage": F(PERCENT),
        "percent": F(Int(0, 100), unsupported="deprecated by Istio: use percentage"),
    },
    need_one_of=(("fixedDelay", "exponentialDelay"),),
)
FAULT_ABORT = Obj(
    {
        "httpStatus": F(Int(200, 599)),
        "grpcStatus": F(Str(), unsupported=True),
        "http2Error": F(Str(), unsupported=True),
        "percentage": F(PERCENT),
    },
    need_one_of=(("httpStatus", "grpcStatus", "http2Error"),),
)
CORS = Obj(
    {
        k: F(AnyValue(), unsupported=True)
        for k in (
            "allowOrigins",
            "allowOrigin",
            "allowMethods",
            "allowHeaders",
            "exposeHeaders",
            "maxAge",
            "allowCredentials",
            "unmatchedPreflights",
        )
    }
)
HTTP_ROUTE = Obj(
    {
        "name": F(Str()),
        "match": F(ListOf(HTTP_MATCH)),
        "route": F(ListOf(HTTP_ROUTE_DESTINATION)),
        "redirect": F(HTTP_REDIRECT),
        "directResponse": F(AnyValue(), unsupported=True),
        "delegate": F(AnyValue(), unsupported=True),
        "rewrite": F(HTTP_REWRITE),
        "timeout": F(Duration(0.001)),
        "retries": F(HTTP_RETRY),
        "fault": F(Obj({"delay": F(FAULT_DELAY), "abort": F(FAULT_ABORT)})),
        "mirror": F(DESTINATION),
        "mirrors": F(AnyValue(), unsupported="use mirror and mirrorPercentage"),
        "mirrorPercentage": F(PERCENT),
        "mirrorPercent": F(Int(0, 100), unsupported="deprecated by Istio: use mirrorPercentage"),
        "corsPolicy": F(CORS, unsupported=True),
        "headers": F(HEADERS),
    },
    one_of=(("route", "redirect"), ("rewrite", "redirect")),
    need_one_of=(("route", "redirect", "directResponse", "delegate"),),
)
ROUTE_DESTINATION = Obj({"destination": F(DESTINATION, required=True), "weight": F(Int(0))})
TLS_MATCH = Obj(
    {
        "sniHosts": F(ListOf(WILDCARD_HOST, min_items=1), required=True),
        "destinationSubnets": F(ListOf(Str(check=_cidr_or_ip)), unsupported=True),
        "port": F(PORT),
        "sourceLabels": F(LABELS, unsupported=True),
        "gateways": F(ListOf(Str())),
        "sourceNamespace": F(Str(), unsupported=True),
    }
)
L4_MATCH = Obj(
    {
        "destinationSubnets": F(ListOf(Str(check=_cidr_or_ip)), unsupported=True),
        "port": F(PORT),
        "sourceSubnet": F(Str(), unsupported=True),
        "sourceLabels": F(LABELS, unsupported=True),
        "gateways": F(ListOf(Str())),
        "sourceNamespace": F(Str(), unsupported=True),
    }
)
VIRTUAL_SERVICE = Obj(
    {
        "hosts": F(ListOf(WILDCARD_HOST, min_items=1), required=True),
        "gateways": F(ListOf(Str())),
        "http": F(ListOf(HTTP_ROUTE)),
        "tls": F(
            ListOf(Obj({"match": F(ListOf(TLS_MATCH), required=True), "route": F(ListOf(ROUTE_DESTINATION))}))
        ),
        "tcp": F(ListOf(Obj({"match": F(ListOf(L4_MATCH)), "route": F(ListOf(ROUTE_DESTINATION))}))),
        "exportTo": EXPORT_TO,
    }
)

# ---------------------------------------------------------------- DestinationRule

CONSISTENT_HASH = Obj(
    {
        "httpHeaderName": F(Str()),
        "httpCookie": F(
            Obj(
                {
                    "name": F(Str(), required=True),
                    "path": F(Str()),
                    "ttl": F(Duration()),
                    "attributes": F(AnyValue(), unsupported=True),
                }
            )
        ),
        "useSourceIp": F(Bool()),
        "httpQueryParameterName": F(Str()),
        "ringHash": F(AnyValue(), unsupported=True),
        "maglev": F(AnyValue(), unsupported=True),
        "minimumRingSize": F(Int(0), unsupported=True),
    },
    need_one_of=(("httpHeaderName", "httpCookie", "useSourceIp", "httpQueryParameterName"),),
)
LOAD_BALANCER = Obj(
    {
        "simple": F(
            Str(enum=("UNSPECIFIED", "LEAST_CONN", "RANDOM", "PASSTHROUGH", "ROUND_ROBIN", "LEAST_REQUEST"))
        ),
        "consistentHash": F(CONSISTENT_HASH),
        "localityLbSetting": F(AnyValue(), unsupported=True),
        "warmupDurationSecs": F(Duration(), unsupported=True),
        "warmup": F(AnyValue(), unsupported=True),
    },
    one_of=(("simple", "consistentHash"),),
)
CONNECTION_POOL = Obj(
    {
        "tcp": F(
            Obj(
                {
                    "maxConnections": F(Int(0)),
                    "connectTimeout": F(Duration(0.001)),
                    "tcpKeepalive": F(AnyValue(), unsupported=True),
                    "maxConnectionDuration": F(Duration(), unsupported=True),
                    "idleTimeout": F(Duration(), unsupported=True),
                }
            )
        ),
        "http": F(
            Obj(
                {
                    "http1MaxPendingRequests": F(Int(0)),
                    "http2MaxRequests": F(Int(0)),
                    "maxRequestsPerConnection": F(Int(0)),
                    "maxRetries": F(Int(0)),
                    "idleTimeout": F(Duration()),
                    "h2UpgradePolicy": F(
                        Str(enum=("DEFAULT", "DO_NOT_UPGRADE", "UPGRADE")), unsupported=True
                    ),
                    "useClientProtocol": F(Bool(), unsupported=True),
                    "maxConcurrentStreams": F(Int(0), unsupported=True),
                }
            )
        ),
    }
)
OUTLIER_DETECTION = Obj(
    {
        "splitExternalLocalOriginErrors": F(Bool(), unsupported=True),
        "consecutiveLocalOriginFailures": F(Int(0), unsupported=True),
        "consecutiveGatewayErrors": F(Int(0)),
        "consecutive5xxErrors": F(Int(0)),
        "consecutiveErrors": F(Int(0), unsupported="deprecated by Istio: use consecutive5xxErrors"),
        "interval": F(Duration(0.001)),
        "baseEjectionTime": F(Duration(0.001)),
        "maxEjectionPercent": F(Int(0, 100)),
        "minHealthPercent": F(Int(0, 100)),
    }
)
CLIENT_TLS = Obj(
    {
        "mode": F(Str(enum=("DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"))),
        "clientCertificate": F(Str()),
        "privateKey": F(Str()),
        "caCertificates": F(Str()),
        "credentialName": F(Str(), unsupported="use clientCertificate, privateKey and caCertificates files"),
        "subjectAltNames": F(ListOf(Str())),
        "sni": F(Str()),
        "insecureSkipVerify": F(Bool(), unsupported=True),
        "caCrl": F(Str(), unsupported=True),
    }
)


def _tls_files(v: dict, path: str, out: list[Issue]) -> None:
    if v.get("mode") == "MUTUAL":
        for k in ("clientCertificate", "privateKey"):
            if not v.get(k):
                out.append((P.SCHEMA, join(path, k), "required when mode is MUTUAL"))


CLIENT_TLS.extra = _tls_files
_POLICY_FIELDS = {
    "loadBalancer": F(LOAD_BALANCER),
    "connectionPool": F(CONNECTION_POOL),
    "outlierDetection": F(OUTLIER_DETECTION),
    "tls": F(CLIENT_TLS),
}
PORT_TRAFFIC_POLICY = Obj({"port": F(PORT_SELECTOR, required=True), **_POLICY_FIELDS})
TRAFFIC_POLICY = Obj(
    {
        **_POLICY_FIELDS,
        "portLevelSettings": F(ListOf(PORT_TRAFFIC_POLICY)),
        "tunnel": F(AnyValue(), unsupported=True),
        "proxyProtocol": F(AnyValue(), unsupported=True),
        "retryBudget": F(AnyValue(), unsupported=True),
    }
)
SUBSET = Obj(
    {
        "name": F(Str(pattern=DNS1123_LABEL, what="subset name (DNS-1123 label)"), required=True),
        "labels": F(LABELS),
        "trafficPolicy": F(TRAFFIC_POLICY),
    }
)
DESTINATION_RULE = Obj(
    {
        "host": F(WILDCARD_HOST, required=True),
        "trafficPolicy": F(TRAFFIC_POLICY),
        "subsets": F(ListOf(SUBSET)),
        "exportTo": EXPORT_TO,
        "workloadSelector": F(WORKLOAD_SELECTOR, unsupported=True),
    }
)

# ---------------------------------------------------------------- ServiceEntry, WorkloadEntry

WORKLOAD_ENTRY = Obj(
    {
        "address": F(Str(check=_ip_or_host)),
        "ports": F(MapOf(PORT)),
        "labels": F(LABELS),
        "network": F(Str(), unsupported=True),
        "locality": F(Str()),
        "weight": F(Int(0, 2**32 - 1)),
        "serviceAccount": F(Str()),
    }
)
SERVICE_PORT = Obj(
    {
        "number": F(PORT, required=True),
        "protocol": F(Str(check=_protocol)),
        "name": F(Str(), required=True),
        "targetPort": F(PORT),
    }
)
SERVICE_ENTRY = Obj(
    {
        "hosts": F(ListOf(WILDCARD_HOST, min_items=1), required=True),
        "addresses": F(ListOf(Str(check=_cidr_or_ip))),
        "ports": F(ListOf(SERVICE_PORT)),
        "location": F(Str(enum=("MESH_EXTERNAL", "MESH_INTERNAL"))),
        "resolution": F(Str(enum=("NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN"))),
        "endpoints": F(ListOf(WORKLOAD_ENTRY)),
        "workloadSelector": F(WORKLOAD_SELECTOR),
        "exportTo": EXPORT_TO,
        "subjectAltNames": F(ListOf(Str())),
    },
    one_of=(("endpoints", "workloadSelector"),),
)

# ---------------------------------------------------------------- Gateway

SERVER_TLS = Obj(
    {
        "httpsRedirect": F(Bool()),
        "mode": F(
            Str(
                enum=(
                    "PASSTHROUGH",
                    "SIMPLE",
                    "MUTUAL",
                    "AUTO_PASSTHROUGH",
                    "ISTIO_MUTUAL",
                    "OPTIONAL_MUTUAL",
                )
            ),
            supported_if=lambda m: (
                None
                if m in ("PASSTHROUGH", "SIMPLE", "MUTUAL")
                else f"TLS mode {m} is not supported by Isthmus yet (use SIMPLE, MUTUAL or PASSTHROUGH)"
            ),
        ),
        "serverCertificate": F(Str()),
        "privateKey": F(Str()),
        "caCertificates": F(Str()),
        "caCrl": F(Str(), unsupported=True),
        "credentialName": F(Str(), unsupported="use serverCertificate, privateKey and caCertificates files"),
        "credentialNames": F(ListOf(Str()), unsupported=True),
        "tlsCertificates": F(AnyValue(), unsupported=True),
        "subjectAltNames": F(ListOf(Str())),
        "verifyCertificateSpki": F(ListOf(Str()), unsupported=True),
        "verifyCertificateHash": F(ListOf(Str()), unsupported=True),
        "minProtocolVersion": F(
            Str(enum=("TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3")), unsupported=True
        ),
        "maxProtocolVersion": F(
            Str(enum=("TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3")), unsupported=True
        ),
        "cipherSuites": F(ListOf(Str()), unsupported=True),
    }
)


def _server_tls_files(v: dict, path: str, out: list[Issue]) -> None:
    if v.get("mode") in ("SIMPLE", "MUTUAL"):
        for k in ("serverCertificate", "privateKey") + (
            ("caCertificates",) if v.get("mode") == "MUTUAL" else ()
        ):
            if not v.get(k):
                out.append((P.SCHEMA, join(path, k), f"required when mode is {v['mode']}"))


SERVER_TLS.extra = _server_tls_files
GATEWAY = Obj(
    {
        "servers": F(
            ListOf(
                Obj(
                    {
                        "port": F(SERVICE_PORT, required=True),
                        "bind": F(Str(check=_ip_or_host)),
                        "hosts": F(ListOf(Str(check=_gateway_host_error), min_items=1), required=True),
                        "tls": F(SERVER_TLS),
                        "defaultEndpoint": F(Str(), unsupported=True),
                        "name": F(Str()),
                    }
                ),
                min_items=1,
            ),
            required=True,
        ),
        "selector": F(LABELS),
    }
)

# ---------------------------------------------------------------- Sidecar

SIDECAR_PORT = Obj(
    {"number": F(PORT), "protocol": F(Str(check=_protocol)), "name": F(Str()), "targetPort": F(PORT)}
)


def _egress_host(s: str) -> str | None:
    ns, sep, name = s.partition("/")
    if not sep:
        return f"egress host {s!r} must be namespace/dnsName (namespace may be *, . or ~)"
    if ns not in ("*", ".", "~") and not re.fullmatch(DNS1123_LABEL, ns):
        return f"egress host {s!r}: {ns!r} is not a valid namespace"
    return host_error(name)


SIDECAR = Obj(
    {
        "workloadSelector": F(WORKLOAD_SELECTOR),
        "ingress": F(AnyValue(), unsupported=True),
        "egress": F(
            ListOf(
                Obj(
                    {
                        "port": F(SIDECAR_PORT, unsupported="egress listeners per port"),
                        "bind": F(Str(), unsupported=True),
                        "captureMode": F(Str(enum=("DEFAULT", "IPTABLES", "NONE")), unsupported=True),
                        "hosts": F(ListOf(Str(check=_egress_host), min_items=1), required=True),
                    }
                )
            )
        ),
        "inboundConnectionPool": F(AnyValue(), unsupported=True),
        "outboundTrafficPolicy": F(
            Obj(
                {
                    "mode": F(Str(enum=("ALLOW_ANY", "REGISTRY_ONLY"))),
                    "egressProxy": F(AnyValue(), unsupported=True),
                }
            )
        ),
    }
)

# ---------------------------------------------------------------- EnvoyFilter (patches: pilot/networking/envoyfilter.py)

_SUB_FILTER = Obj({"name": F(Str())})
ENVOY_FILTER = Obj(
    {
        "workloadSelector": F(WORKLOAD_SELECTOR),
        "targetRefs": F(ListOf(TARGET_REF)),
        "priority": F(Int()),
        "configPatches": F(
            ListOf(
                Obj(
                    {
                        "applyTo": F(
                            Str(
                                enum=(
                                    "INVALID",
                                    "LISTENER",
                                    "FILTER_CHAIN",
                                    "NETWORK_FILTER",
                                    "HTTP_FILTER",
                                    "ROUTE_CONFIGURATION",
                                    "VIRTUAL_HOST",
                                    "HTTP_ROUTE",
                                    "CLUSTER",
                                    "EXTENSION_CONFIG",
                                    "BOOTSTRAP",
                                    "LISTENER_FILTER",
                                )
                            ),
                            required=True,
                        ),
                        "match": F(
                            Obj(
                                {
                                    "context": F(
                                        Str(enum=("ANY", "SIDECAR_INBOUND", "SIDECAR_OUTBOUND", "GATEWAY"))
                                    ),
                                    "proxy": F(
                                        Obj(
                                            {
                                                "proxyVersion": F(Str(check=_regex, code=P.INVALID_REGEX)),
                                                "metadata": F(MapOf(Str())),
                                            }
                                        )
                                    ),
                                    "listener": F(
                                        Obj(
                                            {
                                                "portNumber": F(Int(0, 65535)),
                                                "portName": F(Str()),
                                                "filterChain": F(
                                                    Obj(
                                                        {
                                                            "name": F(Str()),
                                                            "sni": F(Str()),
                                                            "transportProtocol": F(Str()),
                                                            "applicationProtocols": F(Str()),
                                                            "filter": F(
                                                                Obj(
                                                                    {
                                                                        "name": F(Str()),
                                                                        "subFilter": F(_SUB_FILTER),
                                                                    }
                                                                )
                                                            ),
                                                            "destinationPort": F(Int(0, 65535)),
                                                        }
                                                    )
                                                ),
                                                "listenerFilter": F(Str()),
                                                "name": F(Str()),
                                            }
                                        )
                                    ),
                                    "routeConfiguration": F(
                                        Obj(
                                            {
                                                "portNumber": F(Int(0, 65535)),
                                                "portName": F(Str()),
                                                "gateway": F(Str()),
                                                "vhost": F(
                                                    Obj(
                                                        {
                                                            "name": F(Str()),
                                                            "domainName": F(Str()),
                                                            "route": F(
                                                                Obj(
                                                                    {
                                                                        "name": F(Str()),
                                                                        "action": F(
                                                                            Str(
                                                                                enum=(
                                                                                    "ANY",
                                                                                    "ROUTE",
                                                                                    "REDIRECT",
                                                                                    "DIRECT_RESPONSE",
                                                                                )
                                                                            )
                                                                        ),
                                                                    }
                                                                )
                                                            ),
                                                        }
                                                    )
                                                ),
                                                "name": F(Str()),
                                            }
                                        )
                                    ),
                                    "cluster": F(
                                        Obj(
                                            {
                                                "portNumber": F(Int(0, 65535)),
                                                "service": F(Str()),
                                                "subset": F(Str()),
                                                "name": F(Str()),
                                            }
                                        )
                                    ),
                                },
                                one_of=(("listener", "routeConfiguration", "cluster"),),
                            )
                        ),
                        "patch": F(
                            Obj(
                                {
                                    "operation": F(
                                        Str(
                                            enum=(
                                                "INVALID",
                                                "MERGE",
                                                "ADD",
                                                "REMOVE",
                                                "INSERT_BEFORE",
                                                "INSERT_AFTER",
                                                "INSERT_FIRST",
                                                "REPLACE",
                                            )
                                        ),
                                        required=True,
                                    ),
                                    "value": F(AnyValue()),
                                    "filterClass": F(Str(enum=("UNSPECIFIED", "AUTHN", "AUTHZ", "STATS"))),
                                }
                            ),
                            required=True,
                        ),
                    }
                ),
                min_items=1,
            ),
            required=True,
        ),
    },
    one_of=(("workloadSelector", "targetRefs"),),
)

# ---------------------------------------------------------------- security.istio.io (validated; translated later)

SELECTOR = Obj({"matchLabels": F(LABELS)})
MTLS = Obj({"mode": F(Str(enum=("UNSET", "DISABLE", "PERMISSIVE", "STRICT")))})
PEER_AUTHENTICATION = Obj(
    {
        "selector": F(SELECTOR),
        "mtls": F(MTLS),
        "portLevelMtls": F(
            MapOf(
                MTLS,
                key=Str(
                    check=lambda k: (
                        None if k.isdigit() and 0 < int(k) < 65536 else f"port {k!r} is not 1-65535"
                    )
                ),
            )
        ),
    }
)
_STRS = ListOf(Str())
AUTHORIZATION_POLICY = Obj(
    {
        "selector": F(SELECTOR),
        "targetRef": F(TARGET_REF),
        "targetRefs": F(ListOf(TARGET_REF)),
        "rules": F(
            ListOf(
                Obj(
                    {
                        "from": F(
                            ListOf(
                                Obj(
                                    {
                                        "source": F(
                                            Obj(
                                                {
                                                    k: F(_STRS)
                                                    for k in (
                                                        "principals",
                                                        "notPrincipals",
                                                        "requestPrincipals",
                                                        "notRequestPrincipals",
                                                        "namespaces",
                                                        "notNamespaces",
                                                        "ipBlocks",
                                                        "notIpBlocks",
                                                        "remoteIpBlocks",
                                                        "notRemoteIpBlocks",
                                                        "serviceAccounts",
                                                        "notServiceAccounts",
                                                    )
                                                }
                                            )
                                        )
                                    }
                                )
                            )
                        ),
                        "to": F(
                            ListOf(
                                Obj(
                                    {
                                        "operation": F(
                                            Obj(
                                                {
                                                    k: F(_STRS)
                                                    for k in (
                                                        "hosts",
                                                        "notHosts",
                                                        "ports",
                                                        "notPorts",
                                                        "methods",
                                                        "notMethods",
                                                        "paths",
                                                        "notPaths",
                                                    )
                                                }
                                            )
                                        )
                                    }
                                )
                            )
                        ),
                        "when": F(
                            ListOf(
                                Obj(
                                    {
                                        "key": F(Str(), required=True),
                                        "values": F(_STRS),
                                        "notValues": F(_STRS),
                                    }
                                )
                            )
                        ),
                    }
                )
            )
        ),
        "action": F(Str(enum=("ALLOW", "DENY", "AUDIT", "CUSTOM"))),
        "provider": F(Obj({"name": F(Str(), required=True)})),
    },
    one_of=(("selector", "targetRef", "targetRefs"),),
)
REQUEST_AUTHENTICATION = Obj(
    {
        "selector": F(SELECTOR),
        "targetRef": F(TARGET_REF),
        "targetRefs": F(ListOf(TARGET_REF)),
        "jwtRules": F(
            ListOf(
                Obj(
                    {
                        "issuer": F(Str(), required=True),
                        "audiences": F(_STRS),
                        "jwksUri": F(Str()),
                        "jwks": F(Str()),
                        "fromHeaders": F(ListOf(Obj({"name": F(Str(), required=True), "prefix": F(Str())}))),
                        "fromParams": F(_STRS),
                        "fromCookies": F(_STRS),
                        "outputPayloadToHeader": F(Str()),
                        "forwardOriginalToken": F(Bool()),
                        "outputClaimToHeaders": F(
                            ListOf(Obj({"header": F(Str(), required=True), "claim": F(Str(), required=True)}))
                        ),
                        "timeout": F(Duration()),
                    }
                )
            )
        ),
    },
    one_of=(("selector", "targetRef", "targetRefs"),),
)


# ---------------------------------------------------------------- the registry of kinds


@dataclass(frozen=True)
class Kind:
    name: str  # "VirtualService"
    group: str
    versions: tuple[str, ...]
    plural: str
    short_names: tuple[str, ...]
    spec: Schema
    translated: bool = True  # False: accepted and validated, a later issue translates it
    later: str = ""  # which later work translates it

    @property
    def singular(self) -> str:
        return self.name.lower()

    @property
    def preferred_version(self) -> str:
        return self.versions[0]


_NET3 = ("v1", "v1beta1", "v1alpha3")
_SEC = ("v1", "v1beta1")
KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("VirtualService", NETWORKING, _NET3, "virtualservices", ("vs",), VIRTUAL_SERVICE),
        Kind("DestinationRule", NETWORKING, _NET3, "destinationrules", ("dr",), DESTINATION_RULE),
        Kind("ServiceEntry", NETWORKING, _NET3, "serviceentries", ("se",), SERVICE_ENTRY),
        Kind("WorkloadEntry", NETWORKING, _NET3, "workloadentries", ("we",), WORKLOAD_ENTRY),
        Kind("Gateway", NETWORKING, _NET3, "gateways", ("gw",), GATEWAY),
        Kind("Sidecar", NETWORKING, _NET3, "sidecars", (), SIDECAR),
        Kind(
            "EnvoyFilter",
            NETWORKING,
            ("v1alpha3",),
            "envoyfilters",
            (),
            ENVOY_FILTER,  # applied by pilot/networking/envoyfilter.py (what is not: translation warnings)
        ),
        Kind(
            "PeerAuthentication",
            SECURITY,
            _SEC,
            "peerauthentications",
            ("pa",),
            PEER_AUTHENTICATION,
            translated=False,
            later="the security issue enforces it",
        ),
        Kind(
            "AuthorizationPolicy",
            SECURITY,
            _SEC,
            "authorizationpolicies",
            ("ap",),
            AUTHORIZATION_POLICY,
            translated=False,
            later="the security issue enforces it",
        ),
        Kind(
            "RequestAuthentication",
            SECURITY,
            _SEC,
            "requestauthentications",
            ("ra",),
            REQUEST_AUTHENTICATION,
            translated=False,
            later="the security issue enforces it",
        ),
    )
}

# Istio kinds that exist but that Isthmus does not accept yet (a clear error, not "unknown kind").
KNOWN_UNSUPPORTED = {
    "WorkloadGroup": NETWORKING,
    "ProxyConfig": NETWORKING,
    "Telemetry": "telemetry.istio.io",
    "WasmPlugin": "extensions.istio.io",
}


def lookup(name: str) -> Kind | None:
    """A kind by its name, plural, singular or short name, case-insensitive ("vs", "virtualservices")."""
    low = name.lower()
    for k in KINDS.values():
        if low in (k.name.lower(), k.plural, k.singular) or low in k.short_names:
            return k
    return None


def by_plural(group: str, plural: str) -> Kind | None:
    for k in KINDS.values():
        if k.group == group and k.plural == plural:
            return k
    return None
