import pytest

from bookinfo.reviews.logic import RATINGS_UNAVAILABLE, VERSIONS, reviews_body, version_named

RATINGS = {"Reviewer1": 5, "Reviewer2": 4}


def test_v1_has_no_ratings_at_all():
    body = reviews_body(0, VERSIONS["v1"], RATINGS)
    assert body["id"] == "0"
    assert [r["reviewer"] for r in body["reviews"]] == ["Reviewer1", "Reviewer2"]
    assert all("rating" not in r for r in body["reviews"])


@pytest.mark.parametrize("version, color", [("v2", "black"), ("v3", "red")])
def test_v2_black_and_v3_red_stars(version, color):
    body = reviews_body(0, VERSIONS[version], RATINGS, podname="reviews-x", clustername="null")
    assert [r["rating"] for r in body["reviews"]] == [
        {"stars": 5, "color": color},
        {"stars": 4, "color": color},
    ]
    assert body["podname"] == "reviews-x"


def test_missing_ratings_become_istio_error_message():
    body = reviews_body(0, VERSIONS["v2"], None)
    assert [r["rating"] for r in body["reviews"]] == [{"error": RATINGS_UNAVAILABLE}] * 2
    assert RATINGS_UNAVAILABLE == "Ratings service is currently unavailable"
    partial = reviews_body(0, VERSIONS["v3"], {"Reviewer1": 3, "Reviewer2": "x"})
    assert [r["rating"] for r in partial["reviews"]] == [
        {"stars": 3, "color": "red"},
        {"error": RATINGS_UNAVAILABLE},
    ]


def test_ratings_timeouts_match_istio():
    assert VERSIONS["v2"].ratings_timeout == 10.0
    assert VERSIONS["v3"].ratings_timeout == 2.5


def test_unknown_version_is_rejected():
    with pytest.raises(ValueError, match="SERVICE_VERSION must be one of v1, v2, v3"):
        version_named("v4")
