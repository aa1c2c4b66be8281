"""The latency benchmark's pure parts: the mTLS sidecar pair's configuration is one the proxy accepts
(real SVIDs, SAN check, client certificates required), and the rows report what each path adds over
the plaintext direct path."""

from __future__ import annotations

import pytest
from cryptography import x509

from bench.bench_proxy_latency import NAMES, rows_from
from bench.common import mtls_pair_resources, spiffe_id
from citadel.ca.certs import uri_sans
from proxy.config.bootstrap import check_supported, parse_bootstrap_dict


@pytest.fixture(scope="module")
def pair():
    return mtls_pair_resources(upstream_port=18080, inbound=18081, outbound=18082, log_dir="/tmp")


def tls_of(resource: dict) -> dict:
    socket = resource.get("transport_socket") or resource["filter_chains"][0]["transport_socket"]
    return socket["typed_config"]


@pytest.mark.parametrize("side", ["server", "client"])
def test_each_sidecar_bootstrap_is_accepted_by_the_proxy(pair, side):
    listeners, clusters = pair[side]
    bootstrap = parse_bootstrap_dict({"static_resources": {"listeners": listeners, "clusters": clusters}})
    check_supported(bootstrap)  # raises ConfigError on anything unsupported
    assert [lst.name for lst in bootstrap.static_resources.listeners] == [listeners[0]["name"]]


def test_the_hop_between_the_sidecars_is_mutual_tls_with_spiffe_identities(pair):
    server_listener = pair["server"][0][0]
    client_cluster = pair["client"][1][0]
    assert server_listener["address"]["socket_address"]["port_value"] == 18081
    assert client_cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] == {
        "socket_address": {"address": "127.0.0.1", "port_value": 18081}
    }
    server_tls, client_tls = tls_of(server_listener), tls_of(client_cluster)
    assert server_tls["require_client_certificate"] is True
    san = client_tls["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"][0]
    assert san["matcher"]["exact"] == spiffe_id("reviews")
    for tls, account in ((server_tls, "reviews"), (client_tls, "productpage")):
        ctx = tls["common_tls_context"]
        pem = ctx["tls_certificates"][0]["certificate_chain"]["inline_string"].encode()
        root = x509.load_pem_x509_certificate(
            ctx["validation_context"]["trusted_ca"]["inline_string"].encode()
        )
        leaf = x509.load_pem_x509_certificate(pem)
        assert uri_sans(leaf) == [spiffe_id(account)]
        leaf.verify_directly_issued_by(root)
    # The server's inbound HCM sets XFCC as Istio's inbound does.
    hcm = server_listener["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["forward_client_cert_details"] == "APPEND_FORWARD"


def run(p50, p90, p99, **extra):
    return {"p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "errors": 0, **extra}


def test_rows_report_medians_and_what_each_path_adds_over_direct():
    results = {name: [] for name in NAMES}
    results["direct"] = [run(0.1, 0.2, 1.0), run(0.3, 0.4, 3.0), run(0.2, 0.3, 2.0)]
    for name in NAMES[1:]:
        results[name] = [run(1.2, 2.3, 4.0, cpu_s_per_1k=0.3, rss_mb=60.0)] * 3
    rows = {row["path"]: row for row in rows_from(results)}
    assert list(rows) == NAMES
    assert rows["direct"]["p90_added_ms"] is None and rows["direct"]["cpu_s_per_1k_rq"] is None
    pair = rows["isthmus mTLS sidecar pair"]
    assert pair["p50_added_ms"] == pytest.approx(1.0)
    assert pair["p90_added_ms"] == pytest.approx(2.0)
    assert pair["p99_added_ms"] == pytest.approx(2.0)
    assert pair["cpu_s_per_1k_rq"] == 0.3 and pair["rss_mb"] == 60.0 and pair["rate"] == 1000
