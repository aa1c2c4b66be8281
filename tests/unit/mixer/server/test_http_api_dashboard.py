"""mixer's HTTP side serves the dashboard: `/`, every asset the page loads under /static/, nothing outside
mixer/dashboard/, and /api/timeseries carries mixer's clock for the bucket in progress."""

import re
from types import SimpleNamespace

import httpx

from mixer.server.http_api import DASHBOARD, build_app
from mixer.telemetry.store import TrafficStore


def client(now: float = 1000.0) -> httpx.AsyncClient:
    state = SimpleNamespace(store=TrafficStore(clock=lambda: now), is_ready=lambda: True)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(state)), base_url="http://mixer")


async def test_root_serves_the_dashboard_page():
    r = await client().get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    for stable_id in ('id="graph"', 'id="services"', 'id="denials"', 'id="ratelimits"', 'id="quota"'):
        assert stable_id in r.text
    assert 'id="chart-rps"' in r.text and 'id="status"' in r.text


async def test_every_asset_the_page_loads_is_served():
    c = client()
    page = (await c.get("/")).text
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page)
    assert {"/static/app.js", "/static/style.css", "/static/vendor/cytoscape.min.js"} <= set(assets)
    assert "/static/vendor/uPlot.iife.min.js" in assets and "/static/vendor/uPlot.min.css" in assets
    for asset in assets:
        r = await c.get(asset)
        assert r.status_code == 200, asset
        assert r.content == (DASHBOARD / asset.removeprefix("/static/")).read_bytes()
        kind = "javascript" if asset.endswith(".js") else "css"
        assert kind in r.headers["content-type"], asset
    # nothing is fetched from elsewhere: the dashboard works offline
    assert not re.search(r'(?:src|href)="(?:https?:)?//', page)


async def test_static_serves_nothing_outside_the_dashboard_folder():
    c = client()
    assert (await c.get("/static/missing.js")).status_code == 404
    assert (await c.get("/static/../server/http_api.py")).status_code == 404
    assert (await c.get("/static/%2e%2e/server/http_api.py")).status_code == 404


async def test_timeseries_carries_mixers_clock():
    body = (await client(now=1234.5678).get("/api/timeseries")).json()
    assert body["now"] == 1234.568
    assert body["bucket_s"] == 5 and body["history_s"] == 900 and isinstance(body["points"], list)
