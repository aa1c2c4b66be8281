"""HTTP routes of the details service."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from ..common.server import install_access_log
from .data import book_details


def create_app(version: str = "v1") -> FastAPI:
    app = FastAPI(title="bookinfo details", docs_url=None, redoc_url=None, openapi_url=None)
    install_access_log(app, "details")

    @app.get("/health")
    async def health():
        return {"status": "Details is healthy"}

    @app.get("/details/{product_id}")
    async def details(product_id: str):
        try:
            pid = int(product_id)
        except ValueError:
            return JSONResponse({"error": "please provide numeric product id"}, status_code=400)
        return JSONResponse(book_details(pid), headers={"x-bookinfo-version": version})

    return app
