"""TLS transport sockets as Istio writes them (pure dict builders).

Istio's sidecar certificates come over SDS from the agent (``sds-grpc`` cluster, a ``pipe`` address on
the agent's Unix socket; see docs/pilot-architecture.md for what the bootstrap must hold):

* ``default``: the workload's certificate chain and key;
* ``ROOTCA``: the mesh trust bundle, combined with the SAN matchers in a ``combined_validation_context``.

Identities are SPIFFE IDs, ``spiffe://<trust-domain>/ns/<ns>/sa/<sa>``.
"""

from __future__ import annotations

from typing import Any

from pilot.networking.protos import DOWNSTREAM_TLS, UPSTREAM_TLS, typed

TLS_SOCKET = "envoy.transport_sockets.tls"
SDS_CLUSTER = "sds-grpc"
DEFAULT_SECRET = "default"
ROOT_SECRET = "ROOTCA"
# What an Istio sidecar offers to another sidecar, and the inbound chains recognise.
ALPN_ISTIO_MUTUAL = ["istio-peer-exchange", "istio"]
# Istio lists h2 for inbound HTTP too; the Isthmus proxy speaks HTTP/1.1 downstream only, so a client
# that offers h2 (curl) must not be told to use it.
ALPN_INBOUND_HTTP = ["istio-peer-exchange", "http/1.1"]
ALPN_INBOUND_TCP = ["istio-peer-exchange", "h2", "http/1.1"]
TLS_PARAMS = {"tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": "TLSv1_3"}

SDS_CONFIG = {
    "api_config_source": {
        "api_type": "GRPC",
        "transport_api_version": "V3",
        "grpc_services": [{"envoy_grpc": {"cluster_name": SDS_CLUSTER}}],
        "set_node_on_first_message_only": True,
    },
    "resource_api_version": "V3",
    "initial_fetch_timeout": "0s",
}


def spiffe_id(trust_domain: str, namespace: str, service_account: str) -> str:
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


def identity_of(service_account: str, namespace: str, trust_domain: str) -> str | None:
    """An endpoint's SPIFFE ID: as written when it is one, else built from a plain SA name."""
    if not service_account:
        return None
    if service_account.startswith("spiffe://"):
        return service_account
    return spiffe_id(trust_domain, namespace, service_account)


def sni(port: int, subset: str, host: str) -> str:
    """Istio's SNI for a mesh-internal TLS connection (``outbound_.9080_.v1_.reviews.default.svc...``)."""
    return f"outbound_.{port}_.{subset}_.{host}"


def _sds(name: str) -> dict[str, Any]:
    return {"name": name, "sds_config": SDS_CONFIG}


def _uri_sans(sans: list[str]) -> list[dict[str, Any]]:
    return [{"san_type": "URI", "matcher": {"exact": s}} for s in sans]


def istio_common_context(alpn: list[str], sans: list[str] = ()) -> dict[str, Any]:
    """Certificate ``default`` and trust ``ROOTCA`` over SDS; SANs (SPIFFE URIs) when given."""
    default_validation: dict[str, Any] = {}
    if sans:
        default_validation["match_typed_subject_alt_names"] = _uri_sans(list(sans))
    return {
        "tls_params": dict(TLS_PARAMS),
        "alpn_protocols": list(alpn),
        "tls_certificate_sds_secret_configs": [_sds(DEFAULT_SECRET)],
        "combined_validation_context": {
            "default_validation_context": default_validation,
            "validation_context_sds_secret_config": _sds(ROOT_SECRET),
        },
    }


def transport_socket(type_name: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"name": TLS_SOCKET, "typed_config": typed(type_name, body)}


def istio_mutual_upstream(sni_name: str, sans: list[str]) -> dict[str, Any]:
    """ISTIO_MUTUAL: the client side of sidecar-to-sidecar mTLS."""
    return transport_socket(
        UPSTREAM_TLS, {"common_tls_context": istio_common_context(ALPN_ISTIO_MUTUAL, sans), "sni": sni_name}
    )


def istio_mutual_downstream(alpn: list[str]) -> dict[str, Any]:
    """The server side of sidecar-to-sidecar mTLS: a client certificate is required."""
    return transport_socket(
        DOWNSTREAM_TLS,
        {"common_tls_context": istio_common_context(alpn), "require_client_certificate": True},
    )


def _file(path: str) -> dict[str, Any]:
    return {"filename": path}


def file_upstream(settings: dict[str, Any], default_sni: str | None) -> dict[str, Any]:
    """DestinationRule ``tls`` SIMPLE or MUTUAL with files (``caCertificates``, ``clientCertificate``,
    ``privateKey``, ``subjectAltNames``, ``sni``). Unsupported fields are reported by ``tls_warnings``."""
    mode = str(settings.get("mode") or "").upper()
    common: dict[str, Any] = {"tls_params": dict(TLS_PARAMS)}
    validation: dict[str, Any] = {}
    if settings.get("caCertificates"):
        validation["trusted_ca"] = _file(str(settings["caCertificates"]))
    if settings.get("subjectAltNames") and settings.get("caCertificates"):
        # Envoy refuses SAN matching without a trusted CA (it would be meaningless); reported.
        validation["match_typed_subject_alt_names"] = [
            {"san_type": san_type(str(s)), "matcher": {"exact": str(s)}} for s in settings["subjectAltNames"]
        ]
    if validation:
        common["validation_context"] = validation
    if mode == "MUTUAL" and settings.get("clientCertificate") and settings.get("privateKey"):
        common["tls_certificates"] = [
            {
                "certificate_chain": _file(str(settings["clientCertificate"])),
                "private_key": _file(str(settings["privateKey"])),
            }
        ]
    body: dict[str, Any] = {"common_tls_context": common}
    name = settings.get("sni") or default_sni
    if name:
        body["sni"] = str(name)
    return transport_socket(UPSTREAM_TLS, body)


def san_type(san: str) -> str:
    if "://" in san:
        return "URI"
    if "@" in san:
        return "EMAIL"
    if san.replace(".", "").isdigit() or ":" in san:
        return "IP_ADDRESS"
    return "DNS"


# Fields of Istio's ClientTLSSettings the builders translate; anything else is reported.
CLIENT_TLS_FIELDS = {
    "mode",
    "caCertificates",
    "clientCertificate",
    "privateKey",
    "subjectAltNames",
    "sni",
}


def tls_warnings(where: str, settings: dict[str, Any] | None) -> list[str]:
    if not settings:
        return []
    out = []
    mode = str(settings.get("mode") or "DISABLE").upper()
    for f in sorted(set(settings) - CLIENT_TLS_FIELDS):
        out.append(f"{where}.tls.{f}: not supported by Isthmus yet; ignored")
    if (
        settings.get("subjectAltNames")
        and mode in ("SIMPLE", "MUTUAL")
        and not settings.get("caCertificates")
    ):
        out.append(
            f"{where}.tls.subjectAltNames: ignored without caCertificates (nothing to verify the peer with)"
        )
    if mode == "MUTUAL" and not (settings.get("clientCertificate") and settings.get("privateKey")):
        out.append(
            f"{where}.tls: mode MUTUAL without clientCertificate and privateKey files "
            "(credentialName is not supported): no client certificate is sent"
        )
    return out
