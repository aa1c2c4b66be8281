"""Sidecar bootstraps the way Istio writes them for mutual TLS, and the processes around them.

* ``sds-grpc``: a STATIC cluster whose endpoint is the agent's Unix socket (a ``pipe`` address).
* Secrets ``default`` (certificate + key) and ``ROOTCA`` (trust bundle) come from it over SDS.
* Inbound (server side): ``tls_inspector``; a chain matching ``transport_protocol: tls`` with a
  DownstreamTlsContext that requires a client certificate, ALPN ``istio-peer-exchange, h2, http/1.1``,
  ``combined_validation_context`` (ROOTCA from SDS); with PERMISSIVE also a ``raw_buffer`` plaintext
  chain. The HCM sets XFCC as Istio's inbound does (APPEND_FORWARD; subject, dns, uri).
* Outbound (client side): a plaintext HTTP listener for the app; the destination cluster carries an
  UpstreamTlsContext (SDS ``default`` + ROOTCA, SNI ``outbound_.<port>_._.<host>``, ALPN
  ``istio-peer-exchange, istio``, URI SAN match on the server's SPIFFE ID).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.integration.citadel.harness import Citadel
from tests.integration.proxy.harness import RunningProxy, admin_block, start_proxy, static_cluster
from tests.support.net import free_port

TRUST_DOMAIN = "cluster.local"
HCM_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
ROUTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
}
DOWNSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
UPSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"


def spiffe(sa: str, ns: str = "default") -> str:
    return f"spiffe://{TRUST_DOMAIN}/ns/{ns}/sa/{sa}"


def start_agent(procs, workdir: Path, citadel: Citadel, sa: str, ttl: str = "1h") -> Path:
    """A real `python -m proxy.agent --no-proxy` for service account `sa` (bootstrap token from
    `isthmus token create`); returns its SDS socket once it is there."""
    return wait_agent(*launch_agent(procs, workdir, citadel, sa, ttl))


def launch_agent(procs, workdir: Path, citadel: Citadel, sa: str, ttl: str = "1h"):
    workdir.mkdir(parents=True, exist_ok=True)
    token = workdir / "token"
    token.write_text(citadel.token("default", sa))
    sock = workdir / "sds.sock"
    proc = procs.python(
        "-m", "proxy.agent", "--citadel", f"127.0.0.1:{citadel.grpc_port}",
        "--citadel-mtls", f"127.0.0.1:{citadel.mtls_port}", "--root-cert", str(citadel.root_dir / "root-cert.pem"),
        "--token-file", str(token), "--sds-socket", str(sock), "--namespace", "default",
        "--service-account", sa, "--cert-ttl", ttl, "--retry-max", "0.5s", "--no-proxy",
    )  # fmt: skip
    return procs, proc, sock, sa


def wait_agent(procs, proc, sock: Path, sa: str) -> Path:
    deadline = time.monotonic() + 20
    while not sock.exists():
        assert proc.poll() is None, procs.output(proc)
        assert time.monotonic() < deadline, f"agent for {sa} did not open its SDS socket"
        time.sleep(0.02)
    return sock


def sds_cluster(sock: Path) -> dict:
    return {
        "name": "sds-grpc",
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": "sds-grpc",
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"pipe": {"path": str(sock)}}}}]}],
        },
    }


def sds(name: str) -> dict:
    return {
        "name": name,
        "sds_config": {
            "api_config_source": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "sds-grpc"}}],
            },
            "resource_api_version": "V3",
        },
    }


def downstream_tls() -> dict:
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": DOWNSTREAM_TLS,
            "require_client_certificate": True,
            "common_tls_context": {
                "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
                "alpn_protocols": ["istio-peer-exchange", "h2", "http/1.1"],
                "tls_certificate_sds_secret_configs": [sds("default")],
                "combined_validation_context": {
                    "default_validation_context": {},
                    "validation_context_sds_secret_config": sds("ROOTCA"),
                },
            },
        },
    }


def upstream_tls(host: str, port: int, san: str) -> dict:
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": UPSTREAM_TLS,
            "sni": f"outbound_.{port}_._.{host}",
            "common_tls_context": {
                "alpn_protocols": ["istio-peer-exchange", "istio"],
                "tls_certificate_sds_secret_configs": [sds("default")],
                "combined_validation_context": {
                    "default_validation_context": {
                        "match_typed_subject_alt_names": [{"san_type": "URI", "matcher": {"exact": san}}]
                    },
                    "validation_context_sds_secret_config": sds("ROOTCA"),
                },
            },
        },
    }


def hcm(stat_prefix: str, cluster_routes: list[tuple[str, str]], **extra) -> dict:
    """An HCM filter with routes (path prefix -> cluster)."""
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": HCM_TYPE,
            "stat_prefix": stat_prefix,
            "route_config": {
                "name": stat_prefix,
                "virtual_hosts": [
                    {
                        "name": "all",
                        "domains": ["*"],
                        "routes": [
                            {"match": {"prefix": prefix}, "route": {"cluster": cluster, "timeout": "5s"}}
                            for prefix, cluster in cluster_routes
                        ],
                    }
                ],
            },
            "http_filters": [ROUTER],
            **extra,
        },
    }


INBOUND_XFCC = {
    "forward_client_cert_details": "APPEND_FORWARD",
    "set_current_client_cert_details": {"subject": True, "dns": True, "uri": True},
}


def inbound_listener(name: str, port: int, permissive: bool) -> dict:
    """Istio's inbound listener for one port: TLS chain (+ plaintext chain when PERMISSIVE)."""
    chains = [
        {
            "name": f"{name}-mtls",
            "filter_chain_match": {"transport_protocol": "tls"},
            "transport_socket": downstream_tls(),
            "filters": [hcm(f"{name}_tls", [("/", "inbound|app")], **INBOUND_XFCC)],
        }
    ]
    if permissive:
        chains.append(
            {
                "name": f"{name}-plaintext",
                "filter_chain_match": {"transport_protocol": "raw_buffer"},
                "filters": [hcm(f"{name}_plain", [("/", "inbound|app")], **INBOUND_XFCC)],
            }
        )
    return {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "traffic_direction": "INBOUND",
        "listener_filters": [
            {
                "name": "envoy.filters.listener.tls_inspector",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
                },
            }
        ],
        "filter_chains": chains,
    }


@dataclass
class Mesh:
    citadel: Citadel
    client: RunningProxy
    server: RunningProxy
    outbound_port: int  # the client app's sidecar (plaintext HTTP in)
    strict_port: int  # the server sidecar's STRICT inbound port
    permissive_port: int  # the server sidecar's PERMISSIVE inbound port
    app_port: int

    @property
    def root_cert(self) -> Path:
        return self.citadel.root_dir / "root-cert.pem"


SERVER_HOST = "reviews.default.svc.cluster.local"
SERVICE_PORT = 9080
CLIENT_SA, SERVER_SA = "productpage", "reviews"


def start_mesh(
    procs, tmp_path: Path, citadel: Citadel, app_port: int, ttl: str = "1h", cluster_extra: dict | None = None
) -> Mesh:
    """Both agents (started together), the server sidecar, then the client sidecar. `cluster_extra`:
    more fields for the client's cluster to the server (e.g. max_requests_per_connection)."""
    client_agent = launch_agent(procs, tmp_path / "client-agent", citadel, CLIENT_SA, ttl)
    server_agent = launch_agent(procs, tmp_path / "server-agent", citadel, SERVER_SA, ttl)
    client_sock, server_sock = wait_agent(*client_agent), wait_agent(*server_agent)
    strict_port, permissive_port, outbound_port = free_port(), free_port(), free_port()
    server = start_proxy(
        procs,
        {
            "node": {
                "id": f"sidecar~127.0.0.1~{SERVER_SA}-v1.default~default.svc.cluster.local",
                "cluster": SERVER_SA,
            },
            "admin": admin_block(free_port()),
            "static_resources": {
                "listeners": [
                    inbound_listener("inbound-strict", strict_port, permissive=False),
                    inbound_listener("inbound-permissive", permissive_port, permissive=True),
                ],
                "clusters": [static_cluster("inbound|app", [app_port]), sds_cluster(server_sock)],
            },
        },
        wait_ports=(strict_port, permissive_port),
    )
    cluster = f"outbound|{SERVICE_PORT}||{SERVER_HOST}"
    client = start_proxy(
        procs,
        {
            "node": {
                "id": f"sidecar~127.0.0.1~{CLIENT_SA}-v1.default~default.svc.cluster.local",
                "cluster": CLIENT_SA,
            },
            "admin": admin_block(free_port()),
            "static_resources": {
                "listeners": [
                    {
                        "name": "outbound",
                        "address": {"socket_address": {"address": "127.0.0.1", "port_value": outbound_port}},
                        "traffic_direction": "OUTBOUND",
                        "filter_chains": [
                            {
                                "filters": [
                                    hcm(
                                        "outbound",
                                        [
                                            ("/wrong-san", "wrong-san"),
                                            ("/permissive", "permissive"),
                                            ("/plaintext-to-strict", "plaintext-to-strict"),
                                            ("/", cluster),
                                        ],
                                    )
                                ]
                            }
                        ],
                    }
                ],
                "clusters": [
                    static_cluster(
                        cluster,
                        [strict_port],
                        transport_socket=upstream_tls(SERVER_HOST, SERVICE_PORT, spiffe(SERVER_SA)),
                        **(cluster_extra or {}),
                    ),
                    static_cluster(
                        "wrong-san",
                        [strict_port],
                        transport_socket=upstream_tls(SERVER_HOST, SERVICE_PORT, spiffe("ratings")),
                    ),
                    static_cluster(
                        "permissive",
                        [permissive_port],
                        transport_socket=upstream_tls(SERVER_HOST, SERVICE_PORT, spiffe(SERVER_SA)),
                    ),
                    static_cluster("plaintext-to-strict", [strict_port]),
                    sds_cluster(client_sock),
                ],
            },
        },
        wait_ports=(outbound_port,),
    )
    return Mesh(citadel, client, server, outbound_port, strict_port, permissive_port, app_port)


def http_get(
    port: int, path: str = "/", headers: dict | None = None, timeout: float = 10
) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def echoed_headers(body: bytes) -> dict:
    return json.loads(body)["headers"]


def stats(proxy: RunningProxy) -> dict[str, int]:
    with urllib.request.urlopen(f"{proxy.admin}/stats", timeout=5) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        try:
            out[name] = int(value)
        except ValueError:
            pass
    return out


def config_dump(proxy: RunningProxy) -> dict:
    with urllib.request.urlopen(f"{proxy.admin}/config_dump", timeout=5) as resp:
        return json.loads(resp.read())


def dynamic_secrets(proxy: RunningProxy) -> dict[str, dict]:
    for cfg in config_dump(proxy)["configs"]:
        if cfg["@type"].endswith("SecretsConfigDump"):
            return {s["name"]: s for s in cfg.get("dynamic_active_secrets", [])}
    return {}
