"""pilot's Prometheus metrics, with Istio's names (https://istio.io/latest/docs/reference/commands/pilot-discovery/#metrics).

prometheus_client adds ``_total`` to counters on exposition, so ``pilot_xds_pushes`` is scraped as
``pilot_xds_pushes_total`` (the OpenMetrics convention; Istio's own exporter does the same since 1.x
with OpenTelemetry). Histograms are in seconds, as Istio's.

| metric | type | labels | meaning |
|---|---|---|---|
| pilot_xds | gauge | | connected xDS streams (proxies and gRPC clients) |
| pilot_xds_pushes | counter | type (cds, eds, lds, rds) | responses sent (pushes and answers to requests) |
| pilot_total_xds_rejects | counter | type | NACKs received |
| pilot_proxy_convergence_time | histogram | | from the first event of a debounced batch to its push being sent to a proxy |
| pilot_xds_push_time | histogram | type | time to generate one response |
| pilot_push_triggers | counter | type (config, endpoints, services) | events that started a push |
| pilot_debounce_merged | counter | | events merged into debounced pushes |
| pilot_xds_push_context_errors | counter | | generator failures (the proxy keeps its last config) |
| pilot_total_config_validation_errors | counter | source (api) | configs rejected by validation |
| pilot_info | gauge | version | always 1 |
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

CONVERGENCE_BUCKETS = (0.1, 0.5, 1, 3, 5, 10, 20, 30)
PUSH_TIME_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5)


class XdsMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.connected = Gauge("pilot_xds", "Connected xDS streams (proxies and gRPC clients)", registry=r)
        self.pushes = Counter("pilot_xds_pushes", "xDS responses sent, by type", ["type"], registry=r)
        self.rejects = Counter(
            "pilot_total_xds_rejects", "xDS responses NACKed by proxies", ["type"], registry=r
        )
        self.convergence = Histogram(
            "pilot_proxy_convergence_time",
            "Seconds from a config or registry change to its push reaching a proxy",
            buckets=CONVERGENCE_BUCKETS,
            registry=r,
        )
        self.push_time = Histogram(
            "pilot_xds_push_time",
            "Seconds to build one xDS response",
            ["type"],
            buckets=PUSH_TIME_BUCKETS,
            registry=r,
        )
        self.triggers = Counter(
            "pilot_push_triggers", "Events that started a push, by reason", ["type"], registry=r
        )
        self.merged = Counter("pilot_debounce_merged", "Events merged into debounced pushes", registry=r)
        self.generate_errors = Counter(
            "pilot_xds_push_context_errors",
            "Generator failures (the proxy keeps its last config)",
            registry=r,
        )
        self.validation_errors = Counter(
            "pilot_total_config_validation_errors", "Configs rejected by validation", ["source"], registry=r
        )
