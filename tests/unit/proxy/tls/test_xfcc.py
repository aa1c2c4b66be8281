"""x-forwarded-client-cert as Envoy's HCM sets it, for each forward_client_cert_details mode."""

from __future__ import annotations

import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import json_format

from proxy.core.headers import Headers
from proxy.tls import xfcc
from proxy.tls.context import PeerSans
from proxy.tls.transport import TlsConnectionInfo
from tests.unit.proxy.tls.certs import make_ca

ME = "spiffe://cluster.local/ns/default/sa/reviews"
CALLER = "spiffe://cluster.local/ns/default/sa/productpage"
ISTIO = xfcc.XfccConfig(mode=xfcc.APPEND_FORWARD, subject=True, dns=True, uri=True)


def mtls_info() -> TlsConnectionInfo:
    chain, _ = make_ca().issue(CALLER)
    der = x509.load_pem_x509_certificate(chain).public_bytes(Encoding.DER)
    return TlsConnectionInfo("TLSv1.3", "TLS_AES_128_GCM_SHA256", "", "", der, PeerSans(uri=(CALLER,)), "",
                             PeerSans(uri=(ME,)))  # fmt: skip


def test_istio_element():
    info = mtls_info()
    digest = hashlib.sha256(info.peer_certificate_der).hexdigest()
    assert xfcc.current_element(info, ISTIO) == f'By={ME};Hash={digest};Subject="";URI={CALLER}'


@pytest.mark.parametrize(
    "mode,existing,tls,expect",
    [
        (xfcc.SANITIZE, "By=x", True, None),
        (xfcc.FORWARD_ONLY, "By=x", True, "By=x"),
        (xfcc.FORWARD_ONLY, "By=x", False, None),
        (xfcc.APPEND_FORWARD, "By=x", True, "By=x,{cur}"),
        (xfcc.APPEND_FORWARD, None, True, "{cur}"),
        (xfcc.APPEND_FORWARD, "By=x", False, None),
        (xfcc.SANITIZE_SET, "By=x", True, "{cur}"),
        (xfcc.SANITIZE_SET, "By=x", False, None),
        (xfcc.ALWAYS_FORWARD_ONLY, "By=x", False, "By=x"),
    ],
)
def test_modes(mode, existing, tls, expect):
    info = mtls_info()
    config = xfcc.XfccConfig(mode=mode, uri=True)
    cur = xfcc.current_element(info, config)
    result = xfcc.apply(config, existing, info if tls else None)
    assert result == (expect.format(cur=cur) if expect else None)


def test_headers_are_mutated_and_forged_header_sanitized_on_plaintext():
    h = Headers([("x-forwarded-client-cert", "By=spiffe://evil;URI=spiffe://admin")])
    xfcc.apply_to_headers(ISTIO, h, None)
    assert h.get("x-forwarded-client-cert") is None
    h = Headers([])
    xfcc.apply_to_headers(ISTIO, h, mtls_info())
    assert h.get("x-forwarded-client-cert").endswith(f"URI={CALLER}")


def test_config_from_hcm_proto_and_cert_detail():
    hcm = json_format.ParseDict(
        {"forward_client_cert_details": "APPEND_FORWARD",
         "set_current_client_cert_details": {"subject": True, "dns": True, "uri": True, "cert": True}},
        hcm_pb2.HttpConnectionManager(),
    )  # fmt: skip
    config = xfcc.XfccConfig.from_hcm(hcm)
    assert (config.mode, config.subject, config.uri, config.dns, config.cert) == (
        xfcc.APPEND_FORWARD, True, True, True, True)  # fmt: skip
    element = xfcc.current_element(mtls_info(), config)
    assert 'Cert="-----BEGIN%20CERTIFICATE-----' in element
    assert element.index("Cert=") < element.index("Subject=") < element.index("URI=")
