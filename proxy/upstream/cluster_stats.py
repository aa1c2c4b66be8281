"""The stats a cluster owns, under ``cluster.<name>.`` with Envoy's names, looked up once."""

from __future__ import annotations

from proxy.stats.store import Scope

COUNTERS = (
    "upstream_cx_total",
    "upstream_cx_http1_total",
    "upstream_cx_connect_fail",
    "upstream_cx_connect_timeout",
    "upstream_cx_overflow",
    "upstream_cx_destroy",
    "upstream_cx_destroy_local",
    "upstream_cx_destroy_remote",
    "upstream_cx_destroy_with_active_rq",
    "upstream_cx_destroy_local_with_active_rq",
    "upstream_cx_destroy_remote_with_active_rq",
    "upstream_cx_idle_timeout",
    "upstream_cx_max_requests",
    "upstream_cx_close_notify",
    "upstream_cx_protocol_error",
    "upstream_cx_rx_bytes_total",
    "upstream_cx_tx_bytes_total",
    "upstream_rq_total",
    "upstream_rq_pending_total",
    "upstream_rq_pending_overflow",
    "upstream_rq_pending_failure_eject",
    "upstream_rq_cancelled",
    "upstream_rq_retry_overflow",
    "membership_change",
    "update_attempt",
    "update_success",
    "update_failure",
    "update_empty",
)
GAUGES = (
    "upstream_cx_active",
    "upstream_rq_active",
    "upstream_rq_pending_active",
    "membership_healthy",
    "membership_degraded",
    "membership_excluded",
    "membership_total",
    "max_host_weight",
)
HISTOGRAMS = ("upstream_cx_connect_ms", "upstream_cx_length_ms")


class ClusterStats:
    """Attribute access to every stat above (``stats.upstream_cx_total.inc()``). It also answers like
    the cluster's Scope (``stats.counter("upstream_rq_retry")``, ``stats.prefix``), and ``stats.scope``
    is that Scope."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.prefix = scope.prefix
        self.store = scope.store
        self.counter = scope.counter
        self.gauge = scope.gauge
        self.histogram = scope.histogram
        for name in COUNTERS:
            setattr(self, name, scope.counter(name))
        for name in GAUGES:
            setattr(self, name, scope.gauge(name))
        for name in HISTOGRAMS:
            setattr(self, name, scope.histogram(name))
