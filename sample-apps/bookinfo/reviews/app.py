"""HTTP routes of the reviews service; v2 and v3 call ratings."""

from __future__ import annotations

import os
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ..common.client import get_json, make_client
from ..common.headers import forward_headers
from ..common.server import install_access_log
from ..common.settings import Upstream
from .logic import Version, reviews_body


def create_app(version: Version, ratings: Upstream) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.client = make_client()
        yield
        await app.state.client.aclose()

    app = FastAPI(
        title="bookinfo reviews", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan
    )
    install_access_log(app, "reviews")
    podname = os.environ.get("HOSTNAME", "")
    clustername = os.environ.get("CLUSTER_NAME", "null")

    @app.get("/health")
    async def health():
        return {"status": "Reviews is healthy"}

    @app.get("/reviews/{product_id}")
    async def reviews(product_id: str, request: Request):
        try:
            pid = int(product_id)
        except ValueError:
            return JSONResponse({"error": "please provide numeric product ID"}, status_code=400)
        stars = None
        if version.ratings_enabled:
            url = f"{ratings.base_urls()[0]}/ratings/{pid}"
            fetched = await get_json(
                app.state.client, url, forward_headers(request.headers), version.ratings_timeout
            )
            if fetched.ok and isinstance(fetched.body, dict):
                stars = fetched.body.get("ratings")
        body = reviews_body(pid, version, stars, podname, clustername)
        return JSONResponse(body, headers={"x-bookinfo-version": version.name})

    return app
