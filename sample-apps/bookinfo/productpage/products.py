"""The product catalogue, Istio's error bodies and small pure helpers of productpage."""

from __future__ import annotations

import itertools
import string
from urllib.parse import urlsplit

PRODUCTS = (
    {
        "id": 0,
        "title": "The Comedy of Errors",
        "descriptionHtml": (
            '<a href="https://en.wikipedia.org/wiki/The_Comedy_of_Errors">Wikipedia Summary</a>: '
            "The Comedy of Errors is one of <b>William Shakespeare's</b> early plays. It is his shortest "
            "and one of his most farcical comedies, with a major part of the humour coming from slapstick "
            "and mistaken identity, in addition to puns and word play."
        ),
    },
)

DETAILS_UNAVAILABLE = {"error": "Sorry, product details are currently unavailable for this book."}
REVIEWS_UNAVAILABLE = {"error": "Sorry, product reviews are currently unavailable for this book."}
RATINGS_UNAVAILABLE = {"error": "Sorry, product ratings are currently unavailable for this book."}

# Istio's productpage: 3 s for each upstream call, and reviews is tried twice.
DETAILS_TIMEOUT = 3.0
REVIEWS_TIMEOUT = 3.0
REVIEWS_ATTEMPTS = 2
RATINGS_TIMEOUT = 3.0

_USERNAME_CHARS = set(string.ascii_letters + string.digits + "-_.@+")
MAX_USERNAME = 64


def product(product_id: int) -> dict | None:
    return next((p for p in PRODUCTS if p["id"] == product_id), None)


def clean_username(raw: str | None) -> str:
    """A user name safe to put in a cookie and an `end-user` header ('' when nothing usable is left)."""
    return "".join(c for c in (raw or "").strip() if c in _USERNAME_CHARS)[:MAX_USERNAME]


def redirect_target(referer: str | None, default: str = "/productpage") -> str:
    """Where to go after sign-in/out: the referring page's path on this site, never another site."""
    if not referer:
        return default
    parts = urlsplit(referer)
    if not parts.path.startswith("/") or parts.path.startswith("//"):
        return default
    return parts.path + (f"?{parts.query}" if parts.query else "")


class RoundRobin:
    """Hands out base URLs in turn. Only used without a mesh; a sidecar balances otherwise."""

    def __init__(self, urls: list[str]) -> None:
        if not urls:
            raise ValueError("RoundRobin needs at least one URL")
        self._next = itertools.cycle(urls).__next__

    def next(self) -> str:
        return self._next()
