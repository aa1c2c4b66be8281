"""What each reviews version does, and the JSON it answers with (pure; no I/O)."""

from __future__ import annotations

from dataclasses import dataclass

RATINGS_UNAVAILABLE = "Ratings service is currently unavailable"
REVIEWS = (
    ("Reviewer1", "An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!"),
    (
        "Reviewer2",
        "Absolutely fun and entertaining. The play lacks thematic depth when compared to other "
        "plays by Shakespeare.",
    ),
)


@dataclass(frozen=True)
class Version:
    name: str
    ratings_enabled: bool
    star_color: str | None
    # Istio's reviews gives ratings 10 s with black stars (v2) and 2.5 s with red stars (v3).
    ratings_timeout: float


VERSIONS = {
    "v1": Version("v1", ratings_enabled=False, star_color=None, ratings_timeout=0.0),
    "v2": Version("v2", ratings_enabled=True, star_color="black", ratings_timeout=10.0),
    "v3": Version("v3", ratings_enabled=True, star_color="red", ratings_timeout=2.5),
}


def version_named(name: str) -> Version:
    try:
        return VERSIONS[name]
    except KeyError:
        raise ValueError(f"SERVICE_VERSION must be one of {', '.join(VERSIONS)}, got {name!r}") from None


def reviews_body(
    product_id: int, version: Version, ratings: dict | None, podname: str = "", clustername: str = "null"
) -> dict:
    """The reviews JSON. `ratings` is ratings' `{"Reviewer1": 5, ...}`, or None when it could not be had."""
    reviews = []
    for reviewer, text in REVIEWS:
        review: dict = {"reviewer": reviewer, "text": text}
        if version.ratings_enabled:
            stars = (ratings or {}).get(reviewer)
            if isinstance(stars, int) and not isinstance(stars, bool):
                review["rating"] = {"stars": stars, "color": version.star_color}
            else:
                review["rating"] = {"error": RATINGS_UNAVAILABLE}
        reviews.append(review)
    return {"id": str(product_id), "podname": podname, "clustername": clustername, "reviews": reviews}
