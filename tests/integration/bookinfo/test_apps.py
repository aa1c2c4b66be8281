"""Bookinfo's paths and JSON shapes, as in Istio's Bookinfo, over real sockets and processes."""

import httpx
import pytest

from bookinfo.details.data import book_details

REVIEW_TEXTS = {"Reviewer1", "Reviewer2"}


@pytest.fixture
def http():  # per test: a sign-in cookie must not leak into other tests
    with httpx.Client(trust_env=False, timeout=10) as client:
        yield client


@pytest.mark.parametrize(
    "name, status",
    [
        ("productpage", "Product page is healthy"),
        ("details", "Details is healthy"),
        ("reviews-v1", "Reviews is healthy"),
        ("ratings", "Ratings is healthy"),
    ],
)
def test_health(bookinfo_apps, http, name, status):
    r = http.get(f"{bookinfo_apps[name].url}/health")
    assert r.status_code == 200 and r.json() == {"status": status}


def test_details(bookinfo_apps, http):
    r = http.get(f"{bookinfo_apps['details'].url}/details/0")
    assert r.status_code == 200
    assert r.json() == {
        "id": 0,
        "author": "William Shakespeare",
        "year": 1595,
        "type": "paperback",
        "pages": 200,
        "publisher": "PublisherA",
        "language": "English",
        "ISBN-10": "1234567890",
        "ISBN-13": "123-1234567890",
    }
    bad = http.get(f"{bookinfo_apps['details'].url}/details/abc")
    assert bad.status_code == 400 and "error" in bad.json()


def test_ratings(bookinfo_apps, http):
    r = http.get(f"{bookinfo_apps['ratings'].url}/ratings/0")
    assert r.json() == {"id": 0, "ratings": {"Reviewer1": 5, "Reviewer2": 4}}
    assert http.get(f"{bookinfo_apps['ratings'].url}/ratings/x").status_code == 400


@pytest.mark.parametrize(
    "version, ratings",
    [
        ("v1", [None, None]),
        ("v2", [{"stars": 5, "color": "black"}, {"stars": 4, "color": "black"}]),
        ("v3", [{"stars": 5, "color": "red"}, {"stars": 4, "color": "red"}]),
    ],
)
def test_reviews_versions(bookinfo_apps, http, version, ratings):
    r = http.get(f"{bookinfo_apps['reviews-' + version].url}/reviews/0")
    assert r.status_code == 200
    body = r.json()
    assert body["id"] == "0" and set(body) == {"id", "podname", "clustername", "reviews"}
    assert {rev["reviewer"] for rev in body["reviews"]} == REVIEW_TEXTS
    assert [rev.get("rating") for rev in body["reviews"]] == ratings


def test_productpage_api(bookinfo_apps, http):
    base = bookinfo_apps["productpage"].url
    products = http.get(f"{base}/api/v1/products").json()
    assert products[0]["id"] == 0 and products[0]["title"] == "The Comedy of Errors"
    assert "descriptionHtml" in products[0]
    assert http.get(f"{base}/api/v1/products/0").json() == book_details(0)
    reviews = http.get(f"{base}/api/v1/products/0/reviews").json()
    assert reviews["reviews"][0]["rating"] == {"stars": 5, "color": "black"}
    assert http.get(f"{base}/api/v1/products/0/ratings").json()["ratings"] == {"Reviewer1": 5, "Reviewer2": 4}
    assert http.get(f"{base}/api/v1/products/zero").status_code == 400


def test_productpage_html_shows_details_reviews_and_stars(bookinfo_apps, http):
    r = http.get(f"{bookinfo_apps['productpage'].url}/productpage")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    assert "Book Details" in html and "PublisherA" in html and "123-1234567890" in html
    assert "Book Reviews" in html and "Reviewer1" in html
    assert html.count('class="stars stars-black" color="black"') == 2
    assert "Error fetching" not in html


def test_sign_in_sets_end_user_cookie_and_sign_out_clears_it(bookinfo_apps, http):
    base = bookinfo_apps["productpage"].url
    r = http.post(
        f"{base}/login", data={"username": "jason", "passwd": "x"}, headers={"referer": f"{base}/productpage"}
    )
    assert r.status_code == 302 and r.headers["location"] == "/productpage"
    assert r.cookies.get("end-user") == "jason"
    page = http.get(f"{base}/productpage", headers={"cookie": "end-user=jason"}).text
    assert '<b class="user-name">jason</b>' in page and 'href="/logout"' in page
    out = http.get(f"{base}/logout", headers={"cookie": "end-user=jason"})
    assert out.status_code == 302 and 'end-user=""' in out.headers["set-cookie"]
