"""mixer's own Prometheus metrics (the istio_* ones live in mixer.adapters.prometheus)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class MixerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.checks = Counter(
            "mixer_check_total", "Check calls, by result (ok, denied)", ["result"], registry=registry
        )
        self.quota_requests = Counter(
            "mixer_quota_requests_total",
            "ShouldRateLimit calls, by domain and overall code",
            ["domain", "code"],
            registry=registry,
        )
        self.quota_backend_errors = Counter(
            "mixer_quota_backend_errors_total",
            "ShouldRateLimit calls the counter backend could not answer; the failure mode applied",
            ["backend", "failure_mode"],
            registry=registry,
        )
        self.quota_backend_up = Gauge(
            "mixer_quota_backend_up",
            "1 when the last call to the quota backend succeeded",
            ["backend"],
            registry=registry,
        )
        self.quota_shadow_over = Counter(
            "mixer_quota_shadow_over_limit_total",
            "Descriptors over their limit in shadow mode (answered OK)",
            ["domain"],
            registry=registry,
        )
        self.config_reloads = Counter(
            "mixer_config_reloads_total",
            "Config file loads, by result (success, failure)",
            ["result"],
            registry=registry,
        )
        self.config_last_success = Gauge(
            "mixer_config_last_reload_successful", "1 when the last config load succeeded", registry=registry
        )
        self.als_streams = Gauge(
            "mixer_accesslog_streams_active", "Open StreamAccessLogs streams", registry=registry
        )
        self.als_messages = Counter(
            "mixer_accesslog_messages_total",
            "StreamAccessLogs messages received (entries per message: mixer_telemetry_reports_total / this)",
            registry=registry,
        )
        self.als_write_errors = Counter(
            "mixer_accesslog_write_errors_total",
            "JSON access-log lines that could not be written",
            registry=registry,
        )
