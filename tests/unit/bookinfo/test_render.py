import re

from bookinfo.details.data import book_details
from bookinfo.productpage.products import DETAILS_UNAVAILABLE, REVIEWS_UNAVAILABLE, product
from bookinfo.productpage.render import product_page, stars_html
from bookinfo.reviews.logic import VERSIONS, reviews_body

BOOK = product(0)


def render(details_status=200, details=None, reviews_status=200, reviews=None, user=None):
    return product_page(
        BOOK,
        details_status,
        book_details(0) if details is None else details,
        reviews_status,
        reviews_body(0, VERSIONS["v3"], {"Reviewer1": 5, "Reviewer2": 4}) if reviews is None else reviews,
        user,
    )


def test_page_shows_details_and_reviews():
    html = render()
    assert "The Comedy of Errors" in html
    assert "Book Details" in html and "<dd>paperback</dd>" in html and "123-1234567890" in html
    assert "Book Reviews" in html and "Reviewer1" in html and "Reviewer2" in html
    assert "Error fetching" not in html


def test_stars_carry_class_colour_and_count():
    html = stars_html(4, "red")
    assert 'class="stars stars-red"' in html and 'color="red"' in html
    assert html.count('class="glyphicon glyphicon-star"') == 4
    assert html.count('class="glyphicon glyphicon-star-empty"') == 1
    page = render()
    assert page.count('color="red"') == 2
    assert "stars-black" not in page


def test_v1_reviews_have_no_stars():
    html = render(reviews=reviews_body(0, VERSIONS["v1"], None))
    assert "Reviewer1" in html and 'class="glyphicon' not in html and 'class="stars' not in html


def test_upstream_errors_show_istio_messages():
    html = render(
        details_status=503, details=DETAILS_UNAVAILABLE, reviews_status=500, reviews=REVIEWS_UNAVAILABLE
    )
    assert "Error fetching product details!" in html
    assert "Sorry, product details are currently unavailable for this book." in html
    assert "Error fetching product reviews!" in html
    assert "Sorry, product reviews are currently unavailable for this book." in html
    assert "Book Details" not in html and "Book Reviews" not in html


def test_ratings_unavailable_is_shown_per_review():
    html = render(reviews=reviews_body(0, VERSIONS["v2"], None))
    assert html.count("Ratings service is currently unavailable") == 2


def test_sign_in_form_or_user_name():
    anonymous = render()
    assert 'action="/login"' in anonymous and 'name="username"' in anonymous
    signed_in = render(user="jason")
    assert re.search(r'id="user">Welcome <b class="user-name">jason</b>', signed_in)
    assert 'href="/logout"' in signed_in and 'action="/login"' not in signed_in


def test_upstream_text_is_escaped():
    reviews = {"reviews": [{"reviewer": "<script>x</script>", "text": "a & b"}]}
    html = render(reviews=reviews, user="<b>")
    assert "<script>x" not in html and "&lt;script&gt;" in html and "a &amp; b" in html
