"""The TLS layer wired into the proxy: a bootstrap with secrets, TLS filter chains and clusters, the
sds-grpc pipe cluster, XFCC on the HCM, and what the admin shows (keys redacted)."""

from __future__ import annotations

import base64

import pytest
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

from proxy.admin.config_dump import build_dumps
from proxy.config.bootstrap import parse_bootstrap_dict
from proxy.config.errors import ConfigError
from proxy.server import Server
from proxy.tls.admin import REDACTED, certificates, secrets_config_dump, tls_factories
from proxy.tls.xfcc import APPEND_FORWARD, SANITIZE
from tests.unit.proxy.tls.certs import make_ca

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
DOWNSTREAM = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
UPSTREAM = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
SPIFFE = "spiffe://cluster.local/ns/default/sa/reviews"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def hcm(**extra) -> dict:
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": HCM,
            "stat_prefix": "in",
            "route_config": {"virtual_hosts": [{"name": "a", "domains": ["*"], "routes": []}]},
            "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}],
            **extra,
        },
    }


def tls_socket(type_url: str, **ctx) -> dict:
    common = {
        "tls_certificate_sds_secret_configs": [{"name": "cert"}],
        "validation_context_sds_secret_config": {"name": "root"},
    }
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {"@type": type_url, "common_tls_context": common, **ctx},
    }


def bootstrap(ca, *, listener_socket=None, cluster_socket=None, hcm_extra=None) -> dict:
    chain, key = ca.issue(SPIFFE)
    chain_filter = {"filters": [hcm(**(hcm_extra or {}))]}
    if listener_socket is not None:
        chain_filter["transport_socket"] = listener_socket
    cluster = {
        "name": "backend",
        "type": "STATIC",
        "load_assignment": {"endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 9}}}}]}]},
    }  # fmt: skip
    if cluster_socket is not None:
        cluster["transport_socket"] = cluster_socket
    return {
        "static_resources": {
            "secrets": [
                {
                    "name": "cert",
                    "tls_certificate": {
                        "certificate_chain": {"inline_bytes": b64(chain)},
                        "private_key": {"inline_bytes": b64(key)},
                    },
                },
                {"name": "root", "validation_context": {"trusted_ca": {"inline_bytes": b64(ca.pem)}}},
            ],  # fmt: skip
            "listeners": [
                {
                    "name": "inbound",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                    "filter_chains": [chain_filter],
                }
            ],
            "clusters": [
                cluster,
                {
                    "name": "sds-grpc",
                    "type": "STATIC",
                    "load_assignment": {
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {"endpoint": {"address": {"pipe": {"path": "./var/run/sds/socket"}}}}
                                ]
                            }
                        ]
                    },
                },  # fmt: skip
            ],
        }
    }


def server(data: dict) -> Server:
    return Server(parse_bootstrap_dict(data))


def test_tls_chain_and_cluster_from_static_secrets_are_ready_and_xfcc_is_configured():
    ca = make_ca()
    s = server(
        bootstrap(
            ca,
            listener_socket=tls_socket(DOWNSTREAM, require_client_certificate=True),
            cluster_socket=tls_socket(UPSTREAM, sni="outbound_.9080_._.reviews"),
            hcm_extra={
                "forward_client_cert_details": "APPEND_FORWARD",
                "set_current_client_cert_details": {"uri": True, "subject": True},
            },
        )  # fmt: skip
    )
    listener = s.listener_manager.listeners[0]
    (factory,) = listener.tls_factories()
    assert factory.ready and factory.config.server_side and factory.config.require_client_certificate
    backend = s.cluster_manager.get("backend")
    assert (
        backend.transport_socket.ready and backend.transport_socket.config.sni == "outbound_.9080_._.reviews"
    )
    cfg = listener.chains[0][1].factory.config
    assert cfg.xfcc.mode == APPEND_FORWARD and cfg.xfcc.uri and cfg.xfcc.subject and not cfg.xfcc.dns
    # The sds-grpc cluster's pipe endpoint is accepted and shown as its path.
    assert [h.address_str for h in s.cluster_manager.get("sds-grpc").hosts] == ["./var/run/sds/socket"]


def test_xfcc_defaults_to_sanitize():
    s = server(bootstrap(make_ca()))
    assert s.listener_manager.listeners[0].chains[0][1].factory.config.xfcc.mode == SANITIZE
    assert s.listener_manager.listeners[0].chains[0][1].transport_socket is None


@pytest.mark.parametrize(
    ("where", "socket", "path", "message"),
    [
        (
            "listener",
            tls_socket(UPSTREAM),
            "filter_chains[0].transport_socket.typed_config",
            "DownstreamTlsContext",
        ),
        (
            "cluster",
            tls_socket(DOWNSTREAM),
            "clusters[0].transport_socket.typed_config",
            "UpstreamTlsContext",
        ),
        (
            "listener",
            {"name": "envoy.transport_sockets.tls"},
            "transport_socket.typed_config",
            "needs a typed_config",
        ),
    ],
)
def test_wrong_tls_context_is_rejected_with_its_path(where, socket, path, message):
    kw = {"listener_socket": socket} if where == "listener" else {"cluster_socket": socket}
    with pytest.raises(ConfigError) as info:
        server(bootstrap(make_ca(), **kw))
    assert path in info.value.path and message in str(info.value)


def test_missing_static_secret_is_an_error_naming_the_field():
    data = bootstrap(make_ca(), listener_socket=tls_socket(DOWNSTREAM))
    data["static_resources"]["secrets"] = data["static_resources"]["secrets"][1:]
    with pytest.raises(ConfigError, match="static secret 'cert' is not in static_resources.secrets"):
        server(data)


def test_pipe_address_only_in_static_clusters():
    data = bootstrap(make_ca())
    data["static_resources"]["clusters"][1]["type"] = "STRICT_DNS"
    with pytest.raises(ConfigError) as info:
        server(data)
    assert info.value.path.endswith("endpoint.address.pipe")


def test_config_dump_and_certs_never_show_private_keys():
    ca = make_ca()
    s = server(bootstrap(ca, listener_socket=tls_socket(DOWNSTREAM)))
    dump = secrets_config_dump(s.secret_manager)
    assert [x.name for x in dump.static_secrets] == ["cert", "root"]
    secret = secret_pb2.Secret()
    dump.static_secrets[0].secret.Unpack(secret)
    assert secret.tls_certificate.private_key.inline_string == REDACTED
    assert secret.tls_certificate.certificate_chain.inline_bytes.startswith(b"-----BEGIN CERTIFICATE")
    assert b"PRIVATE KEY" not in dump.SerializeToString()
    assert type(build_dumps(s)[-1]).__name__ == "SecretsConfigDump"
    certs = certificates(tls_factories(s))
    (entry,) = certs.certificates
    assert entry.cert_chain[0].subject_alt_names[0].uri == SPIFFE
    assert entry.cert_chain[0].path == "sds:cert" and entry.ca_cert[0].path == "sds:root"
