"""HTTP routes of productpage: the page, its JSON API, sign-in and sign-out."""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from ..common.client import Fetched, get_json, make_client
from ..common.headers import USER_COOKIE, forward_headers
from ..common.server import install_access_log
from ..common.settings import Upstream
from . import products as p
from .render import index_page, product_page


@dataclass(frozen=True)
class Upstreams:
    details: Upstream
    reviews: Upstream
    ratings: Upstream


def create_app(upstreams: Upstreams) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.client = make_client()
        yield
        await app.state.client.aclose()

    app = FastAPI(
        title="bookinfo productpage", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan
    )
    install_access_log(app, "productpage")
    reviews_urls = p.RoundRobin(upstreams.reviews.base_urls())

    def headers_for(request: Request) -> dict[str, str]:
        return forward_headers(request.headers, p.clean_username(request.cookies.get(USER_COOKIE)) or None)

    async def details(pid: int, headers: dict[str, str]) -> Fetched:
        url = f"{upstreams.details.base_urls()[0]}/details/{pid}"
        got = await get_json(app.state.client, url, headers, p.DETAILS_TIMEOUT)
        return got if got.ok else Fetched(got.status, p.DETAILS_UNAVAILABLE)

    async def reviews(pid: int, headers: dict[str, str]) -> Fetched:
        got = Fetched(500)
        for _ in range(p.REVIEWS_ATTEMPTS):
            got = await get_json(
                app.state.client, f"{reviews_urls.next()}/reviews/{pid}", headers, p.REVIEWS_TIMEOUT
            )
            if got.ok:
                return got
        return Fetched(got.status, p.REVIEWS_UNAVAILABLE)

    async def ratings(pid: int, headers: dict[str, str]) -> Fetched:
        url = f"{upstreams.ratings.base_urls()[0]}/ratings/{pid}"
        got = await get_json(app.state.client, url, headers, p.RATINGS_TIMEOUT)
        return got if got.ok else Fetched(got.status, p.RATINGS_UNAVAILABLE)

    def bad_id() -> JSONResponse:
        return JSONResponse({"error": "please provide numeric product id"}, status_code=400)

    @app.get("/health")
    async def health():
        return {"status": "Product page is healthy"}

    @app.get("/", response_class=HTMLResponse)
    async def index():
        return index_page()

    @app.get("/productpage", response_class=HTMLResponse)
    async def productpage(request: Request):
        headers = headers_for(request)
        product = p.product(0)
        d = await details(product["id"], headers)
        r = await reviews(product["id"], headers)
        return product_page(product, d.status, d.body, r.status, r.body, headers.get("end-user"))

    @app.post("/login")
    async def login(request: Request):
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        user = p.clean_username((form.get("username") or [""])[0])
        response = RedirectResponse(p.redirect_target(request.headers.get("referer")), status_code=302)
        if user:
            response.set_cookie(USER_COOKIE, user, path="/", httponly=True, samesite="lax")
        else:
            response.delete_cookie(USER_COOKIE, path="/")
        return response

    @app.get("/logout")
    async def logout(request: Request):
        response = RedirectResponse(p.redirect_target(request.headers.get("referer")), status_code=302)
        response.delete_cookie(USER_COOKIE, path="/")
        return response

    @app.get("/api/v1/products")
    async def products_list():
        return list(p.PRODUCTS)

    @app.get("/api/v1/products/{product_id}")
    async def product_details(product_id: str, request: Request):
        if not product_id.isdigit():
            return bad_id()
        got = await details(int(product_id), headers_for(request))
        return JSONResponse(got.body, status_code=got.status)

    @app.get("/api/v1/products/{product_id}/reviews")
    async def product_reviews(product_id: str, request: Request):
        if not product_id.isdigit():
            return bad_id()
        got = await reviews(int(product_id), headers_for(request))
        return JSONResponse(got.body, status_code=got.status)

    @app.get("/api/v1/products/{product_id}/ratings")
    async def product_ratings(product_id: str, request: Request):
        if not product_id.isdigit():
            return bad_id()
        got = await ratings(int(product_id), headers_for(request))
        return JSONResponse(got.body, status_code=got.status)

    return app
