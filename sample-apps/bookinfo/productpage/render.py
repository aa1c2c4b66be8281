"""HTML of productpage (pure: data in, text out).

Star elements are easy to find: `<font class="stars stars-<color>" color="<color>">` holding one
`span.glyphicon-star` per star and a `span.glyphicon-star-empty` for each missing one, as in Istio.
"""

from __future__ import annotations

from html import escape

STYLE = """
body { font-family: sans-serif; margin: 0; color: #222; }
nav { background: #222; color: #eee; padding: 10px 20px; display: flex; align-items: center; gap: 16px; }
nav .brand { color: #fff; font-weight: bold; text-decoration: none; margin-right: auto; }
nav a, nav button { color: #eee; }
nav input { padding: 3px; }
main { padding: 0 20px; }
.row { display: flex; gap: 40px; flex-wrap: wrap; }
.row > section { flex: 1; min-width: 280px; }
blockquote { border-left: 4px solid #ccc; margin: 12px 0; padding: 4px 12px; }
.error { color: #a00; }
.glyphicon-star, .glyphicon-star-empty { font-size: 1.3em; }
.reviewer { display: block; margin-bottom: 4px; }
"""


def _nav(user: str | None) -> str:
    if user:
        return (
            f'<span id="user">Welcome <b class="user-name">{escape(user)}</b></span>'
            '<a id="logout" href="/logout">sign out</a>'
        )
    return (
        '<form id="login-form" method="post" action="/login">'
        '<input type="text" name="username" placeholder="User Name" aria-label="User Name"> '
        '<input type="password" name="passwd" placeholder="Password" aria-label="Password"> '
        '<button type="submit" id="login-button">Sign in</button></form>'
    )


def _details(status: int, details: dict | None) -> str:
    if status == 200 and details:
        rows = [
            ("Type", "type"),
            ("Pages", "pages"),
            ("Publisher", "publisher"),
            ("Language", "language"),
            ("ISBN-10", "ISBN-10"),
            ("ISBN-13", "ISBN-13"),
        ]
        items = "".join(
            f"<dt>{label}:</dt><dd>{escape(str(details.get(key, '')))}</dd>" for label, key in rows
        )
        return f'<h4 class="heading">Book Details</h4><dl class="book-details">{items}</dl>'
    message = (details or {}).get("error", "")
    return '<h4 class="heading error">Error fetching product details!</h4>' + (
        f'<p class="error-detail">{escape(message)}</p>' if message else ""
    )


def stars_html(stars: int, color: str) -> str:
    stars = max(0, min(5, stars))
    full = '<span class="glyphicon glyphicon-star">&#9733;</span>' * stars
    empty = '<span class="glyphicon glyphicon-star-empty">&#9734;</span>' * (5 - stars)
    c = escape(color)
    return f'<font class="stars stars-{c}" color="{c}" data-stars="{stars}">{full}{empty}</font>'


def _rating(rating: dict | None) -> str:
    if not rating:
        return ""
    stars = rating.get("stars")
    if isinstance(stars, int) and stars > 0:
        return stars_html(stars, str(rating.get("color", "black")))
    if rating.get("error"):
        return f'<p class="rating-error"><i>{escape(str(rating["error"]))}</i></p>'
    return ""


def _reviews(status: int, reviews: dict | None) -> str:
    if status == 200 and reviews:
        items = "".join(
            f'<blockquote class="review"><p>{escape(str(r.get("text", "")))}</p>'
            f'<small class="reviewer">{escape(str(r.get("reviewer", "")))}</small>'
            f"{_rating(r.get('rating'))}</blockquote>"
            for r in reviews.get("reviews", [])
        )
        pod = reviews.get("podname")
        served = (
            f'<dl><dt>Reviews served by:</dt><dd class="served-by">{escape(pod)}</dd></dl>' if pod else ""
        )
        return f'<h4 class="heading">Book Reviews</h4>{items}{served}'
    message = (reviews or {}).get("error", "")
    return '<h4 class="heading error">Error fetching product reviews!</h4>' + (
        f'<p class="error-detail">{escape(message)}</p>' if message else ""
    )


def page(title: str, body: str, user: str | None) -> str:
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{STYLE}</style></head><body>"
        f'<nav><a class="brand" href="/productpage">BookInfo Sample</a>{_nav(user)}</nav>'
        f"<main>{body}</main></body></html>"
    )


def product_page(
    product: dict,
    details_status: int,
    details: dict | None,
    reviews_status: int,
    reviews: dict | None,
    user: str | None,
) -> str:
    # descriptionHtml is our own catalogue's trusted HTML, as in Istio; everything else is escaped.
    body = (
        f'<h3 class="title">{escape(product["title"])}</h3>'
        f'<p class="summary">{product["descriptionHtml"]}</p>'
        f'<div class="row"><section id="details">{_details(details_status, details)}</section>'
        f'<section id="reviews">{_reviews(reviews_status, reviews)}</section></div>'
    )
    return page("Simple Bookstore App", body, user)


def index_page() -> str:
    body = (
        "<h3>Hello! This is a simple bookstore application consisting of three services as shown "
        "below</h3><p>productpage calls details and reviews; reviews v2 and v3 call ratings.</p>"
        "<p>Click on one of the links below to auto generate a request to the backend as a real user "
        'or a tester</p><p><a href="/productpage?u=normal">Normal user</a></p>'
        '<p><a href="/productpage?u=test">Test user</a></p>'
    )
    return page("Simple Bookstore App", body, None)
