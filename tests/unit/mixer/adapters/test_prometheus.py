from prometheus_client import CollectorRegistry

from mixer.adapters.prometheus import IstioMetrics
from mixer.telemetry.attributes import REQUEST_LABELS, TCP_LABELS, Report


def http(code: str, ms: float = 3.0) -> Report:
    labels = dict.fromkeys(REQUEST_LABELS, "x")
    labels["response_code"] = code
    return Report("http", labels, duration_ms=ms, request_bytes=10, response_bytes=1000)


def test_records_istio_metrics_with_standard_names():
    reg = CollectorRegistry()
    m = IstioMetrics(reg)
    assert m.record(http("200", 3)) and m.record(http("200", 700))
    labels = dict.fromkeys(REQUEST_LABELS, "x")
    labels["response_code"] = "200"
    assert reg.get_sample_value("istio_requests_total", labels) == 2
    assert reg.get_sample_value("istio_request_duration_milliseconds_bucket", {**labels, "le": "5.0"}) == 1
    assert reg.get_sample_value("istio_request_duration_milliseconds_bucket", {**labels, "le": "1000.0"}) == 2
    assert reg.get_sample_value("istio_response_bytes_sum", labels) == 2000
    tcp = dict.fromkeys(TCP_LABELS, "t")
    m.record(Report("tcp", tcp, opened=True, closed=True, sent_bytes=5, received_bytes=7))
    assert reg.get_sample_value("istio_tcp_connections_opened_total", tcp) == 1
    assert reg.get_sample_value("istio_tcp_sent_bytes_total", tcp) == 5
    assert reg.get_sample_value("istio_tcp_received_bytes_total", tcp) == 7


def test_series_bound_drops_new_series_and_counts_them():
    reg = CollectorRegistry()
    m = IstioMetrics(reg, max_series=2)
    assert m.record(http("200")) and m.record(http("404"))
    assert not m.record(http("500"))
    assert m.record(http("200"))  # existing series keep counting
    assert m.series_count("http") == 2
    assert (
        reg.get_sample_value("mixer_telemetry_dropped_series_total", {"metric": "istio_requests_total"}) == 1
    )
    assert (
        reg.get_sample_value("mixer_telemetry_dropped_series_total", {"metric": "istio_response_bytes"}) == 1
    )
