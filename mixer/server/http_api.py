"""mixer's HTTP side (Starlette): the dashboard, the JSON API, /metrics and /ready.

``/`` serves ``mixer/dashboard/index.html`` and ``/static/...`` the rest of ``mixer/dashboard/``.
JSON API (``window`` is in seconds, default 60):

``/api/graph?window=``       nodes (workloads: id ``<namespace>/<workload>``, app, version) and edges
                             (source, target, service, protocol, rps, error_rate, mtls)
``/api/services?window=``    per destination service: rps, success_rate, p50_ms, p90_ms, p99_ms
``/api/denials``, ``/api/ratelimits``   recent events, newest first, with their totals
``/api/quota``               per limited descriptor: used in the current window, limit, unit
``/api/timeseries``          5-second points over the last 15 minutes: rps, error_rate, per-service rps;
                             ``now`` is mixer's clock, so a client can place the bucket in progress
``/api/config``              a summary of the config in force
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

DASHBOARD = Path(__file__).resolve().parents[1] / "dashboard"


def _window(request: Request) -> float:
    try:
        value = float(request.query_params.get("window", "60"))
    except ValueError:
        value = -1
    if not 1 <= value <= 900:
        raise ValueError("window must be a number of seconds between 1 and 900")
    return value


def build_app(state) -> Starlette:
    """`state` has: registry, is_ready(), store, denials, ratelimits, usage, holder."""

    async def index(request: Request) -> Response:
        return FileResponse(DASHBOARD / "index.html")

    async def ready(request: Request) -> Response:
        ok = state.is_ready()
        return PlainTextResponse("ready\n" if ok else "not ready\n", status_code=200 if ok else 503)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(state.registry), media_type=CONTENT_TYPE_LATEST)

    def windowed(fn):
        async def handler(request: Request) -> Response:
            try:
                window = _window(request)
            except ValueError as e:
                return JSONResponse({"error": str(e)}, status_code=400)
            return JSONResponse(fn(window))

        return handler

    async def graph(request: Request) -> Response:
        return await windowed(state.store.graph)(request)

    async def services(request: Request) -> Response:
        return await windowed(lambda w: {"window_s": w, "services": state.store.services(w)})(request)

    async def denials(request: Request) -> Response:
        return JSONResponse(state.denials.recent())

    async def ratelimits(request: Request) -> Response:
        return JSONResponse(state.ratelimits.recent())

    async def quota(request: Request) -> Response:
        return JSONResponse({"backend": state.backend_name, "usage": state.usage.snapshot()})

    async def timeseries(request: Request) -> Response:
        return JSONResponse({**state.store.timeseries(), "now": round(state.store.clock(), 3)})

    async def config(request: Request) -> Response:
        c = state.holder.current
        return JSONResponse(
            {
                "file": state.holder.path,
                "policy_rules": [r.name for r in c.policy.rules],
                "quota_domains": sorted(c.quota.domains),
                "failure_mode": c.quota.failure_mode,
                "max_series_per_metric": c.telemetry.max_series_per_metric,
                "access_log": c.telemetry.access_log_path,
            }
        )

    routes = [
        Route("/", index),
        Route("/ready", ready),
        Route("/metrics", metrics),
        Route("/api/graph", graph),
        Route("/api/services", services),
        Route("/api/denials", denials),
        Route("/api/ratelimits", ratelimits),
        Route("/api/quota", quota),
        Route("/api/timeseries", timeseries),
        Route("/api/config", config),
        Mount("/static", StaticFiles(directory=DASHBOARD), name="static"),
    ]
    return Starlette(routes=routes)
