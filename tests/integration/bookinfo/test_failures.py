"""When an upstream is down, slow or failing, productpage shows Istio's messages instead of failing."""

import time

import httpx

from bookinfo.details.data import book_details
from bookinfo.reviews.logic import VERSIONS, reviews_body

from .helpers import closed_upstream, start_app, upstream_env

REVIEWS = reviews_body(0, VERSIONS["v1"], None)


def get(url: str, **kw) -> httpx.Response:
    with httpx.Client(trust_env=False, timeout=30) as http:
        return http.get(url, **kw)


def test_details_down(procs, recorder):
    up = recorder({"/reviews/0": REVIEWS})
    pp = start_app(procs, "productpage", {**closed_upstream("details"), **upstream_env("reviews", up)})
    r = get(f"{pp.url}/productpage")
    assert r.status_code == 200
    assert "Error fetching product details!" in r.text
    assert "Sorry, product details are currently unavailable for this book." in r.text
    assert "Book Reviews" in r.text and "Book Details" not in r.text
    api = get(f"{pp.url}/api/v1/products/0")
    assert api.status_code == 500 and api.json() == {
        "error": "Sorry, product details are currently unavailable for this book."
    }


def test_reviews_down(procs, recorder):
    up = recorder({"/details/0": book_details(0)})
    pp = start_app(procs, "productpage", {**upstream_env("details", up), **closed_upstream("reviews")})
    r = get(f"{pp.url}/productpage")
    assert r.status_code == 200
    assert "Error fetching product reviews!" in r.text
    assert "Sorry, product reviews are currently unavailable for this book." in r.text
    assert "Book Details" in r.text
    assert get(f"{pp.url}/api/v1/products/0/reviews").status_code == 500


def test_reviews_error_status_is_passed_on(procs, recorder):
    up = recorder({"/details/0": book_details(0)})  # /reviews/0 answers 404
    pp = start_app(procs, "productpage", {**upstream_env("details", up), **upstream_env("reviews", up)})
    assert "Error fetching product reviews!" in get(f"{pp.url}/productpage").text
    assert get(f"{pp.url}/api/v1/products/0/reviews").status_code == 404
    assert len(up.headers_for("/reviews/")) == 2 * 2  # tried twice per request, as Istio's productpage


def test_ratings_down_shows_ratings_unavailable(procs, recorder):
    up = recorder({"/details/0": book_details(0)})
    reviews = start_app(procs, "reviews", {"SERVICE_VERSION": "v2", **closed_upstream("ratings")})
    pp = start_app(procs, "productpage", {**upstream_env("details", up), **upstream_env("reviews", reviews)})
    html = get(f"{pp.url}/productpage").text
    assert html.count("Ratings service is currently unavailable") == 2
    assert "Book Reviews" in html and 'class="stars' not in html
    assert (
        "Sorry, product ratings are currently unavailable" in get(f"{pp.url}/api/v1/products/0/ratings").text
    )


def test_slow_details_times_out_after_3s(procs, recorder):
    slow = recorder({"/details/0": book_details(0), "/reviews/0": REVIEWS}, hold="/details/")
    pp = start_app(procs, "productpage", {**upstream_env("details", slow), **upstream_env("reviews", slow)})
    started = time.monotonic()
    html = get(f"{pp.url}/productpage").text
    elapsed = time.monotonic() - started
    assert "Error fetching product details!" in html and "Book Reviews" in html
    assert 2.9 <= elapsed < 8, elapsed


def test_second_reviews_attempt_goes_to_the_next_host(procs, recorder):
    # Without a mesh productpage takes the reviews hosts in turn; its retry reaches the live one.
    up = recorder({"/details/0": book_details(0), "/reviews/0": REVIEWS})
    env = {
        **upstream_env("details", up),
        "REVIEWS_HOSTNAME": f"127.0.0.1,{up.address}",
        "REVIEWS_SERVICE_PORT": str(up.port),
    }
    pp = start_app(procs, "productpage", env)
    html = get(f"{pp.url}/productpage").text
    assert "Book Reviews" in html and "Error fetching" not in html
