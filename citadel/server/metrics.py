"""citadel's Prometheus metrics, named as Istio's CA names them where Istio has one."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge


class CitadelMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.csr_count = Counter(
            "citadel_server_csr_count", "CSRs received by CreateCertificate", registry=registry
        )
        self.success_cert_issuance_count = Counter(
            "citadel_server_success_cert_issuance_count", "Certificates issued", registry=registry
        )
        self.csr_rejections = Counter(
            "citadel_server_csr_rejections",
            "CreateCertificate requests refused, by reason",
            ["reason"],
            registry=registry,
        )
        self.authentication_failure_count = Counter(
            "citadel_server_authentication_failure_count",
            "Callers whose token or client certificate was refused",
            registry=registry,
        )
        self.root_cert_expiry = Gauge(
            "citadel_server_root_cert_expiry_timestamp",
            "Unix time when the root certificate expires",
            registry=registry,
        )
