import json
import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy.stats import export
from proxy.stats.store import Store


@pytest.fixture
def store():
    s = Store()
    s.counter("cluster.backend.upstream_rq_total").inc(5)
    s.counter("cluster.backend.upstream_rq_2xx").inc(4)
    s.counter("cluster.backend.upstream_rq_5xx").inc(1)
    s.counter("cluster.backend.upstream_rq_503").inc(1)
    s.counter("cluster.outbound|9080||reviews.default.svc.cluster.local.upstream_rq_total").inc(2)
    s.counter("http.ingress.downstream_rq_total").inc(5)
    s.counter("http.ingress.downstream_rq_4xx")  # created, never used
    s.counter("listener.127.0.0.1_15001.downstream_cx_total").inc(3)
    s.counter("tcp.echo.downstream_cx_total").inc(1)
    s.gauge("cluster.backend.membership_healthy").set(2)
    s.gauge("server.live").set(1)
    h = s.histogram("cluster.backend.upstream_rq_time")
    for v in (1, 2, 3, 4, 40):
        h.record(v)
    s.histogram("http.ingress.downstream_rq_time")
    return s


def samples(text):
    out = {}
    for fam in text_string_to_metric_families(text):
        for smp in fam.samples:
            out[(smp.name, tuple(sorted(smp.labels.items())))] = (fam.type, smp.value)
    return out


def test_text_is_sorted_name_value_lines_then_histograms(store):
    lines = export.text(store).splitlines()
    plain = [ln for ln in lines if not ln.endswith("No recorded values") and " P0(" not in ln]
    assert plain == sorted(plain)
    assert "cluster.backend.upstream_rq_total: 5" in lines
    assert "cluster.backend.membership_healthy: 2" in lines
    hist = [ln for ln in lines if ln.startswith("cluster.backend.upstream_rq_time: ")]
    assert hist and lines.index(hist[0]) > lines.index(plain[-1])
    for q in ("P0(", "P25(", "P50(", "P90(", "P99(", "P99.9(", "P100("):
        assert q in hist[0]
    assert "http.ingress.downstream_rq_time: No recorded values" in lines


def test_text_p50_is_within_the_recorded_range(store):
    line = next(
        ln for ln in export.text(store).splitlines() if ln.startswith("cluster.backend.upstream_rq_time")
    )
    p50 = float(re.search(r"P50\(nan,([^)]+)\)", line).group(1))
    assert 1 <= p50 <= 5


def test_filter_regex_and_usedonly(store):
    out = export.text(store, filter_re=re.compile(r"^http\."))
    assert all(ln.startswith("http.") for ln in out.splitlines())
    assert "http.ingress.downstream_rq_4xx: 0" in out
    used = export.text(store, used_only=True)
    assert "downstream_rq_4xx" not in used and "http.ingress.downstream_rq_time" not in used
    assert "http.ingress.downstream_rq_total: 5" in used


def test_json_shape_like_envoy(store):
    doc = json.loads(export.json_text(store))
    stats = doc["stats"]
    assert {"name": "cluster.backend.upstream_rq_total", "value": 5} in stats
    hist = stats[-1]["histograms"]
    assert hist["supported_quantiles"] == [0, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 100]
    computed = {c["name"]: c["values"] for c in hist["computed_quantiles"]}
    values = computed["cluster.backend.upstream_rq_time"]
    assert len(values) == 10 and all(set(v) == {"interval", "cumulative"} for v in values)
    assert values[-1]["cumulative"] >= values[0]["cumulative"]
    assert all(v["cumulative"] is None for v in computed["http.ingress.downstream_rq_time"])


def test_prometheus_parses_and_extracts_envoy_tags(store):
    text = export.prometheus(store)
    got = samples(text)
    assert got[("envoy_cluster_upstream_rq_total", (("envoy_cluster_name", "backend"),))] == ("counter", 5)
    # (the parser reports counter samples with a `_total` suffix)
    assert (
        got[
            (
                "envoy_cluster_upstream_rq_xx_total",
                (("envoy_cluster_name", "backend"), ("envoy_response_code_class", "2")),
            )
        ][1]
        == 4
    )
    assert (
        got[
            (
                "envoy_cluster_upstream_rq_total",
                (("envoy_cluster_name", "backend"), ("envoy_response_code", "503")),
            )
        ][1]
        == 1
    )
    assert (
        'envoy_cluster_upstream_rq_xx{envoy_response_code_class="2",envoy_cluster_name="backend"} 4\n' in text
    )
    assert (
        got[
            (
                "envoy_cluster_upstream_rq_total",
                (("envoy_cluster_name", "outbound|9080||reviews.default.svc.cluster.local"),),
            )
        ][1]
        == 2
    )
    assert got[("envoy_http_downstream_rq_total", (("envoy_http_conn_manager_prefix", "ingress"),))][1] == 5
    assert (
        got[("envoy_listener_downstream_cx_total", (("envoy_listener_address", "127.0.0.1_15001"),))][1] == 3
    )
    assert got[("envoy_tcp_downstream_cx_total", (("envoy_tcp_prefix", "echo"),))][1] == 1
    assert got[("envoy_cluster_membership_healthy", (("envoy_cluster_name", "backend"),))] == ("gauge", 2)
    assert got[("envoy_server_live", ())] == ("gauge", 1)


def test_prometheus_histogram_buckets_sum_count(store):
    text = export.prometheus(store)
    assert "# TYPE envoy_cluster_upstream_rq_time histogram\n" in text
    got = samples(text)
    lbl = (("envoy_cluster_name", "backend"),)
    assert got[("envoy_cluster_upstream_rq_time_count", lbl)][1] == 5
    assert got[("envoy_cluster_upstream_rq_time_sum", lbl)][1] == 50
    assert got[("envoy_cluster_upstream_rq_time_bucket", lbl + (("le", "5"),))][1] == 4
    assert got[("envoy_cluster_upstream_rq_time_bucket", lbl + (("le", "+Inf"),))][1] == 5


def test_prometheus_one_type_line_per_metric(store):
    types = [ln for ln in export.prometheus(store).splitlines() if ln.startswith("# TYPE")]
    assert len(types) == len(set(types))


def test_label_values_are_escaped():
    s = Store()
    s.counter('cluster.we"ird\\name.upstream_rq_total').inc()
    got = samples(export.prometheus(s))
    assert got[("envoy_cluster_upstream_rq_total", (("envoy_cluster_name", 'we"ird\\name'),))][1] == 1


def test_extract_tags_untagged_names_are_kept():
    assert export.extract_tags("server.uptime") == ("server.uptime", ())
    assert export.extract_tags("cluster.backend.upstream_rq_2xx") == (
        "cluster.upstream_rq_xx",
        (("envoy.response_code_class", "2"), ("envoy.cluster_name", "backend")),
    )
