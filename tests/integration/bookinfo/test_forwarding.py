"""Every app passes the tracing headers and end-user on to its upstreams, and only those."""

import httpx

from bookinfo.common.headers import TRACING_HEADERS
from bookinfo.details.data import book_details
from bookinfo.reviews.logic import VERSIONS, reviews_body

from .helpers import start_app, upstream_env

TRACE = {name: f"{name}-value" for name in TRACING_HEADERS} | {
    "x-request-id": "5e1c7d7a-0000-4000-8000-000000000001",
    "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "b3": "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1",
}
REVIEWS = reviews_body(0, VERSIONS["v1"], None)


def assert_forwarded(seen: dict[str, str], user: str | None) -> None:
    for name, value in TRACE.items():
        assert seen.get(name) == value, f"{name} not forwarded"
    assert seen.get("end-user") == user
    assert "x-not-forwarded" not in seen and "cookie" not in seen


def test_productpage_forwards_to_details_and_reviews_with_user_from_cookie(procs, recorder):
    upstream = recorder({"/details/0": book_details(0), "/reviews/0": REVIEWS})
    pp = start_app(
        procs, "productpage", {**upstream_env("details", upstream), **upstream_env("reviews", upstream)}
    )
    with httpx.Client(trust_env=False, timeout=10) as http:
        r = http.get(
            f"{pp.url}/productpage", headers={**TRACE, "x-not-forwarded": "1", "cookie": "end-user=jason"}
        )
    assert r.status_code == 200 and "jason" in r.text and "Book Reviews" in r.text
    (details_headers,) = upstream.headers_for("/details/")
    (reviews_headers,) = upstream.headers_for("/reviews/")
    assert_forwarded(details_headers, "jason")
    assert_forwarded(reviews_headers, "jason")


def test_reviews_forwards_to_ratings(procs, recorder):
    ratings = recorder({"/ratings/0": {"id": 0, "ratings": {"Reviewer1": 1, "Reviewer2": 2}}})
    reviews = start_app(procs, "reviews", {"SERVICE_VERSION": "v3", **upstream_env("ratings", ratings)})
    with httpx.Client(trust_env=False, timeout=10) as http:
        body = http.get(
            f"{reviews.url}/reviews/0", headers={**TRACE, "end-user": "jason", "x-not-forwarded": "1"}
        ).json()
    assert [r["rating"] for r in body["reviews"]] == [
        {"stars": 1, "color": "red"},
        {"stars": 2, "color": "red"},
    ]
    (seen,) = ratings.headers_for("/ratings/")
    assert_forwarded(seen, "jason")


def test_upstream_calls_go_through_http_proxy_when_set(procs, recorder):
    # The way a sidecar is put in front of an app in local mode: HTTP_PROXY, and service names.
    sidecar = recorder(
        {"http://details:9080/details/0": book_details(0), "http://reviews:9080/reviews/0": REVIEWS}
    )
    proxy = f"http://{sidecar.address}:{sidecar.port}"
    pp = start_app(
        procs, "productpage", {"HTTP_PROXY": proxy, "http_proxy": proxy, "NO_PROXY": "", "no_proxy": ""}
    )
    with httpx.Client(trust_env=False, timeout=10) as http:
        html = http.get(f"{pp.url}/productpage", headers={"x-request-id": "via-proxy"}).text
    assert "Book Details" in html and "Book Reviews" in html
    assert [p for p, _ in sidecar.requests] == [
        "http://details:9080/details/0",
        "http://reviews:9080/reviews/0",
    ]
    assert all(h["x-request-id"] == "via-proxy" for _, h in sidecar.requests)
