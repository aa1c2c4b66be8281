"""HTTP routes of the ratings service."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from ..common.server import install_access_log

RATINGS = {"Reviewer1": 5, "Reviewer2": 4}


def create_app(version: str = "v1") -> FastAPI:
    app = FastAPI(title="bookinfo ratings", docs_url=None, redoc_url=None, openapi_url=None)
    install_access_log(app, "ratings")

    @app.get("/health")
    async def health():
        return {"status": "Ratings is healthy"}

    @app.get("/ratings/{product_id}")
    async def ratings(product_id: str):
        try:
            pid = int(product_id)
        except ValueError:
            return JSONResponse({"error": "please provide numeric product ID"}, status_code=400)
        return JSONResponse({"id": pid, "ratings": dict(RATINGS)}, headers={"x-bookinfo-version": version})

    return app
