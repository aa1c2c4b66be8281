"""Mixer's dashboard as a person sees it: a real `python -m mixer` fed Bookinfo's traffic as access-log
entries over real gRPC, loaded in the system's headless Chromium (Playwright, never a downloaded
browser). Also `isthmus dashboard`, run as a user runs it."""

from __future__ import annotations

import subprocess
import sys

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2
from google.protobuf import struct_pb2

from tests.integration.mixer.harness import start_mixer
from tests.support.net import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SA = "spiffe://cluster.local/ns/default/sa/bookinfo-{}"


def workload(app: str, version: str = "v1") -> dict:
    return {
        "workload": f"{app}-{version}",
        "namespace": "default",
        "app": app,
        "version": version,
        "principal": SA.format(app),
        "service_account": f"bookinfo-{app}",
    }


PRODUCTPAGE = workload("productpage")
DETAILS = workload("details")
REVIEWS = {v: workload("reviews", v) for v in ("v1", "v2", "v3")}
RATINGS = workload("ratings")

# (source, destination, service, mTLS): Bookinfo's calls, each reported by the destination's sidecar
BOOKINFO_EDGES = [
    (PRODUCTPAGE, DETAILS, "details", False),
    (PRODUCTPAGE, REVIEWS["v1"], "reviews", True),
    (PRODUCTPAGE, REVIEWS["v2"], "reviews", True),
    (PRODUCTPAGE, REVIEWS["v3"], "reviews", True),
    (REVIEWS["v2"], RATINGS, "ratings", True),
    (REVIEWS["v3"], RATINGS, "ratings", True),
]


def inbound_entry(src: dict, dst: dict, service: str, mtls: bool, code: int, duration_ms: int):
    """What a sidecar's inbound listener logs, with the label Struct docs/mixer.md describes."""
    e = accesslog_pb2.HTTPAccessLogEntry(protocol_version=accesslog_pb2.HTTPAccessLogEntry.HTTP11)
    c = e.common_properties
    c.upstream_cluster = "inbound|9080||"
    c.duration.FromMilliseconds(duration_ms)
    meta = struct_pb2.Struct()
    meta.update(
        {
            "reporter": "destination",
            "source": {**src, "principal": src["principal"] if mtls else ""},
            "destination": {**dst, "principal": dst["principal"] if mtls else ""},
            "destination_service": f"{service}:9080",
            "connection_security_policy": "mutual_tls" if mtls else "none",
        }
    )
    c.metadata.filter_metadata["isthmus"].CopyFrom(meta)
    e.request.authority = f"{service}:9080"
    e.request.path = f"/{service}/0"
    e.request.request_method = base_pb2.GET
    e.response.response_code.value = code
    e.response.response_body_bytes = 300
    return e


def send_traffic(mixer, rounds: int, failing_ratings_every: int = 0) -> None:
    """`rounds` page views of Bookinfo: one request per edge each, from each destination's sidecar.
    With failing_ratings_every=k, every k-th call reviews-v3 -> ratings answers 503."""
    by_destination: dict[str, list] = {}
    for i in range(rounds):
        for src, dst, service, mtls in BOOKINFO_EDGES:
            failing = failing_ratings_every and dst is RATINGS and src is REVIEWS["v3"]
            code = 503 if failing and i % failing_ratings_every == 0 else 200
            entry = inbound_entry(src, dst, service, mtls, code, duration_ms=5 + (i * 7) % 40)
            by_destination.setdefault(dst["workload"], []).append(entry)
    stub = mixer.accesslog()
    for name, entries in by_destination.items():
        first = als_pb2.StreamAccessLogsMessage()
        first.identifier.node.id = f"sidecar~127.0.0.1~{name}.default~default.svc.cluster.local"
        first.identifier.log_name = "inbound"
        messages = [first]
        for i in range(0, len(entries), 50):
            m = als_pb2.StreamAccessLogsMessage() if i else first
            m.http_logs.log_entry.extend(entries[i : i + 50])
            if i:
                messages.append(m)
        stub.StreamAccessLogs(iter(messages), timeout=10)


def graph_edges(page) -> set[tuple[str, str]]:
    return {
        (e["source"], e["target"])
        for e in page.evaluate(
            "window.cy.edges().map(e => ({source: e.source().id(), target: e.target().id()}))"
        )
    }


@pytest.fixture
def chromium():
    """A headless Chromium; every page opened in it must run without a JavaScript error."""
    sync_api = pytest.importorskip("playwright.sync_api")
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()
            context.on("weberror", lambda e: errors.append(str(e.error)))
            yield context
        finally:
            browser.close()
    assert errors == [], f"JavaScript errors on the dashboard: {errors}"


@pytest.mark.browser
def test_dashboard_shows_bookinfo_graph_and_moves_with_traffic(procs, tmp_path, artifacts_dir, chromium):
    mixer = start_mixer(procs, tmp_path)
    page = chromium.new_page()
    page.set_viewport_size({"width": 1280, "height": 1300})
    page.goto(mixer.http + "/")

    # no traffic yet: the page works and says so
    page.wait_for_function("document.getElementById('status').dataset.state === 'live'")
    assert page.locator("#graph").get_attribute("data-node-count") == "0"
    assert page.locator("#graph-empty").is_visible()
    assert page.locator("#services-empty").is_visible()
    assert page.locator("#denials-empty").is_visible() and page.locator("#quota-empty").is_visible()
    page.screenshot(path=str(artifacts_dir / "dashboard-empty.png"), full_page=True)

    send_traffic(mixer, rounds=30, failing_ratings_every=5)
    page.wait_for_function("document.getElementById('graph').dataset.edgeCount === '6'", timeout=5000)
    assert page.locator("#graph").get_attribute("data-node-count") == "6"
    labels = page.evaluate("window.cy.nodes('[kind = \"workload\"]').map(n => n.data('label'))")
    assert sorted(labels) == [
        "details v1",
        "productpage v1",
        "ratings v1",
        "reviews v1",
        "reviews v2",
        "reviews v3",
    ]
    # the three versions of reviews sit in one box for the app
    parents = page.evaluate(
        'window.cy.nodes(\'[app = "reviews"][kind = "workload"]\').map(n => n.parent().id())'
    )
    assert parents == ["app:default/reviews"] * 3
    pp, d, r, ra = "default/productpage-v1", "default/details-v1", "default/reviews-", "default/ratings-v1"
    assert graph_edges(page) == {
        (pp, d),
        (pp, r + "v1"),
        (pp, r + "v2"),
        (pp, r + "v3"),
        (r + "v2", ra),
        (r + "v3", ra),
    }
    edges = {
        (e["s"], e["t"]): e
        for e in page.evaluate(
            "window.cy.edges().map(e => ({s: e.source().id(), t: e.target().id(), label: e.data('label'),"
            " mtls: e.data('mtls'), errors: e.data('errors'), color: e.style('line-color')}))"
        )
    }
    failing = edges[(r + "v3", ra)]
    assert failing["errors"] == 1 and "20.0% err" in failing["label"] and failing["color"] == "rgb(198,40,40)"
    assert "mTLS" in failing["label"]
    plain = edges[(pp, d)]
    assert plain["mtls"] == 0 and "mTLS" not in plain["label"] and "err" not in plain["label"]
    assert "rps" in plain["label"] and "mTLS" in edges[(pp, r + "v1")]["label"]

    row = page.locator("#services tr[data-service='reviews.default.svc.cluster.local']")
    assert row.get_attribute("data-requests") == "90"
    assert row.locator("[data-field=success_rate]").inner_text() == "100.00%"
    ratings = page.locator("#services tr[data-service='ratings.default.svc.cluster.local']")
    assert ratings.locator("[data-field=success_rate]").inner_text() == "90.00%"
    for q in ("p50_ms", "p90_ms", "p99_ms"):
        assert float(ratings.locator(f"[data-field={q}]").inner_text()) > 0
    assert page.locator("#services tbody tr").count() == 3
    page.wait_for_function("document.querySelectorAll('#chart-rps .u-series').length >= 5")

    # more traffic: the counters move without a reload
    before = int(page.locator("#graph").get_attribute("data-requests"))
    assert before == 30 * 6
    send_traffic(mixer, rounds=10)
    page.wait_for_function(
        f"Number(document.getElementById('graph').dataset.requests) === {before + 60}", timeout=3000
    )
    assert row.get_attribute("data-requests") == "120"
    assert (
        page.evaluate(
            f"window.cy.getElementById('{pp}->{r}v2|reviews.default.svc.cluster.local|http').data('requests')"
        )
        == 40
    )
    page.screenshot(path=str(artifacts_dir / "dashboard-bookinfo.png"), full_page=True)
    page.locator("#graph").screenshot(path=str(artifacts_dir / "dashboard-bookinfo-graph.png"))

    # a longer window: same traffic, spread over 15 minutes
    page.select_option("#window", "900")
    page.wait_for_function("document.getElementById('graph-summary').textContent.endsWith('in 900 s')")
    assert row.locator("[data-field=rps]").inner_text() == "0.13"  # 120 requests / 900 s

    # mixer gone: the page keeps what it knew and says it is stale
    procs.stop(mixer.proc)
    page.wait_for_function("document.getElementById('status').dataset.state === 'down'", timeout=5000)
    assert page.locator("#graph").get_attribute("data-edge-count") == "6"


def run_isthmus(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "isthmus", *args], capture_output=True, text=True, timeout=30, env=None
    )


def test_isthmus_dashboard_prints_the_url(procs, tmp_path):
    mixer = start_mixer(procs, tmp_path)
    result = run_isthmus("dashboard", "--mixer", mixer.http, "--no-browser")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"Mixer dashboard: {mixer.http}/"


def test_isthmus_dashboard_says_when_mixer_is_unreachable():
    port = free_port()  # nothing listens there
    result = run_isthmus("dashboard", "--mixer", f"http://127.0.0.1:{port}", "--no-browser")
    assert result.returncode == 1
    assert result.stdout == ""
    assert f"mixer is not reachable at http://127.0.0.1:{port}/" in result.stderr


POLICY_AND_QUOTA = """
policy:
  rules:
  - name: deny-sleep
    list:
      attribute: source.principal
      entryType: STRINGS
      entries: ["spiffe://cluster.local/ns/default/sa/sleep"]
      mode: deny
quota:
  domains:
  - domain: productpage-ratelimit
    descriptors:
    - key: PATH
      value: /productpage
      rate_limit: {unit: minute, requests_per_unit: 5}
"""


@pytest.mark.browser
def test_dashboard_shows_denials_rate_limits_and_quota_live(procs, tmp_path, artifacts_dir, chromium):
    from envoy.service.auth.v3 import external_auth_pb2

    from tests.integration.mixer.harness import rl_request

    mixer = start_mixer(procs, tmp_path, POLICY_AND_QUOTA)
    page = chromium.new_page()
    page.set_viewport_size({"width": 1280, "height": 1300})
    page.goto(mixer.http + "/")
    page.wait_for_function("document.getElementById('status').dataset.state === 'live'")
    assert page.locator("#denials-total").inner_text() == "0"
    assert page.locator("#config-summary").inner_text().count("1 policy rule ·") == 1

    sleep = "spiffe://cluster.local/ns/default/sa/sleep"
    for path in ("/productpage", "/api/v1/products", "/logout"):
        req = external_auth_pb2.CheckRequest()
        req.attributes.source.principal = sleep
        req.attributes.source.address.socket_address.address = "127.0.0.20"
        req.attributes.request.http.host = "productpage:9080"
        req.attributes.request.http.path = path
        assert mixer.authz().Check(req, timeout=5).status.code != 0
    codes = [
        mixer.ratelimit()
        .ShouldRateLimit(rl_request("productpage-ratelimit", [("PATH", "/productpage")]), timeout=5)
        .overall_code
        for _ in range(8)
    ]
    assert codes.count(2) == 3  # OVER_LIMIT for the three past the limit of 5

    page.wait_for_function("document.getElementById('denials-total').dataset.total === '3'", timeout=3000)
    page.wait_for_function("document.getElementById('ratelimits-total').dataset.total === '3'", timeout=3000)
    rows = page.locator("#denials tbody tr")
    assert rows.count() == 3
    newest = rows.nth(0)
    assert newest.locator("[data-field=rule]").inner_text() == "deny-sleep"
    assert newest.locator("[data-field=source]").inner_text() == sleep
    assert (
        newest.locator("[data-field=request]").inner_text() == "productpage/logout"
    )  # mixer reports the host without its port
    assert newest.locator("[data-field=http_status]").inner_text() == "403"
    limited = page.locator("#ratelimits tbody tr").nth(0)
    assert limited.locator("[data-field=domain]").inner_text() == "productpage-ratelimit"
    assert "/productpage" in limited.locator("[data-field=descriptor]").inner_text()
    assert limited.locator("[data-field=reason]").inner_text() == "over limit"
    quota = page.locator("#quota tbody tr")
    assert quota.count() == 1
    assert quota.locator("[data-field=used]").inner_text().endswith("/ 5 per minute")
    assert quota.locator("[data-field=mode]").inner_text() == "enforced"
    assert page.locator("#quota .bar > span.full").count() == 1
    assert not page.locator("#denials-empty").is_visible() and not page.locator("#quota-empty").is_visible()
    page.screenshot(path=str(artifacts_dir / "dashboard-policy-quota.png"), full_page=True)
