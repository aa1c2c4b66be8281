"""The dashboard's pure JavaScript helpers (mixer/dashboard/app.js), run in the system's headless Chromium
without a server: node labels, app boxes and colours, edge labels, and the 15-minute chart series."""

import pytest

from mixer.server.http_api import DASHBOARD

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def js():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_content("<!doctype html><title>app.js</title>")
            page.add_script_tag(path=str(DASHBOARD / "app.js"))  # after load: the dashboard does not start
            yield lambda expr, arg=None: page.evaluate(expr, arg)
        finally:
            browser.close()


def node(workload, app, version, ns="default"):
    return {"id": f"{ns}/{workload}", "workload": workload, "namespace": ns, "app": app, "version": version}


def edge(src, dst, service, rps=1.0, error_rate=0.0, mtls=True, protocol="http", requests=60):
    return {
        "source": src,
        "target": dst,
        "service": service,
        "protocol": protocol,
        "rps": rps,
        "requests": requests,
        "error_rate": error_rate,
        "mtls": mtls,
        "tcp_bytes": 0,
    }


def test_node_labels_are_app_and_version(js):
    assert js("n => nodeLabel(n)", node("reviews-v2", "reviews", "v2")) == "reviews v2"
    assert js("n => nodeLabel(n)", node("reviews-v2", "reviews", "unknown")) == "reviews"
    assert (
        js("n => nodeLabel(n)", node("istio-ingressgateway", "unknown", "unknown")) == "istio-ingressgateway"
    )


def test_graph_elements_box_the_versions_of_an_app(js):
    graph = {
        "nodes": [
            node("productpage-v1", "productpage", "v1"),
            node("reviews-v1", "reviews", "v1"),
            node("reviews-v2", "reviews", "v2"),
            node("ratings-v1", "ratings", "v1"),
        ],
        "edges": [
            edge("default/productpage-v1", "default/reviews-v1", "reviews.default.svc.cluster.local"),
            edge("default/productpage-v1", "default/reviews-v2", "reviews.default.svc.cluster.local"),
            edge("default/reviews-v2", "default/ratings-v1", "ratings.default.svc.cluster.local", 0.5, 0.25),
        ],
    }
    elements = js("g => graphElements(g)", graph)
    nodes = {e["data"]["id"]: e["data"] for e in elements if e["group"] == "nodes"}
    edges = [e["data"] for e in elements if e["group"] == "edges"]
    assert (
        nodes["app:default/reviews"]["kind"] == "app" and nodes["app:default/reviews"]["label"] == "reviews"
    )
    assert (
        nodes["default/reviews-v1"]["parent"]
        == nodes["default/reviews-v2"]["parent"]
        == "app:default/reviews"
    )
    assert "parent" not in nodes["default/productpage-v1"]  # one workload: no box
    assert "app:default/productpage" not in nodes
    assert nodes["default/reviews-v1"]["color"] == nodes["default/reviews-v2"]["color"]
    colors = {nodes[f"default/{w}"]["color"] for w in ("productpage-v1", "reviews-v1", "ratings-v1")}
    assert len(colors) == 3
    [failing] = [e for e in edges if e["target"] == "default/ratings-v1"]
    assert failing["errors"] == 1 and failing["mtls"] == 1
    assert failing["label"] == "0.50 rps · 25.0% err · mTLS"
    assert len(edges) == 3 and len({e["id"] for e in edges}) == 3


def test_shape_key_ignores_numbers_but_not_topology(js):
    a = {
        "nodes": [node("a-v1", "a", "v1"), node("b-v1", "b", "v1")],
        "edges": [edge("default/a-v1", "default/b-v1", "b")],
    }
    busier = {**a, "edges": [edge("default/a-v1", "default/b-v1", "b", rps=9, error_rate=0.5)]}
    grown = {"nodes": [*a["nodes"], node("c-v1", "c", "v1")], "edges": a["edges"]}
    key = "g => shapeKey(graphElements(g))"
    assert js(key, a) == js(key, busier)
    assert js(key, a) != js(key, grown)


def test_edge_labels(js):
    assert js("e => edgeLabel(e)", edge("a", "b", "s", rps=0.0, mtls=False)) == "0 rps"
    assert js("e => edgeLabel(e)", edge("a", "b", "s", rps=123.4, mtls=False)) == "123 rps"
    assert js("e => edgeLabel(e)", edge("a", "b", "s", rps=0.004, error_rate=1.0, mtls=True)) == (
        "<0.01 rps · 100.0% err · mTLS"
    )
    tcp = {**edge("a", "b", "s", protocol="tcp", mtls=False), "tcp_bytes": 2048}
    assert js("e => edgeLabel(e)", tcp) == "tcp 2.0 KiB"


def test_unknown_apps_are_grey(js):
    assert js("appColor('unknown')") == js("appColor('')") == "#9e9e9e"
    assert js("appColor('details')") == js("appColor('details')") != "#9e9e9e"


def test_chart_series_cover_15_minutes_with_zeros_between_points(js):
    ts = {
        "bucket_s": 5,
        "history_s": 900,
        "points": [
            {"t": 1000, "rps": 2.0, "error_rate": 0.5, "services": {"reviews": 2.0}},
            {"t": 1500, "rps": 1.0, "error_rate": 0.0, "services": {"details": 0.4, "reviews": 0.6}},
        ],
    }
    data = js("([ts, now]) => chartSeries(ts, now)", [ts, 1502.0])  # 2 s into the bucket of 1500
    xs, total, details, reviews = data["rps"]
    assert data["services"] == ["details", "reviews"]
    assert len(xs) == 180 and xs[0] == 1500 - 895 and xs[-1] == 1500
    assert all(b - a == 5 for a, b in zip(xs, xs[1:], strict=False))
    i = xs.index(1000)
    assert total[i] == 2.0 and reviews[i] == 2.0 and details[i] == 0
    assert data["errors"][1][i] == 50.0
    assert sum(total) - total[i] - total[-1] == 0  # no traffic: zero, not a gap
    # the bucket in progress has lasted 2 of its 5 seconds: its count is spread over 2 s
    assert total[-1] == pytest.approx(2.5) and details[-1] == pytest.approx(1.0)
