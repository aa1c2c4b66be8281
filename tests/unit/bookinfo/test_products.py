import pytest

from bookinfo.productpage.products import RoundRobin, clean_username, product, redirect_target


def test_catalogue_has_istio_book():
    assert product(0)["title"] == "The Comedy of Errors"
    assert product(1) is None


@pytest.mark.parametrize(
    "raw, clean",
    [
        ("jason", "jason"),
        ("  jason ", "jason"),
        ("ja son\r\n", "jason"),
        ("a;b=c", "abc"),
        ("", ""),
        (None, ""),
        ("x" * 100, "x" * 64),
        ("j\u00e4son", "json"),
    ],
)
def test_user_names_are_safe_for_cookie_and_header(raw, clean):
    assert clean_username(raw) == clean


@pytest.mark.parametrize(
    "referer, target",
    [
        (None, "/productpage"),
        ("http://127.0.0.10:9080/productpage", "/productpage"),
        ("http://127.0.0.10:9080/productpage?u=test", "/productpage?u=test"),
        ("https://evil.example//evil.example/x", "/productpage"),
        ("javascript:alert(1)", "/productpage"),
    ],
)
def test_redirect_stays_on_this_site(referer, target):
    assert redirect_target(referer) == target


def test_round_robin_cycles():
    rr = RoundRobin(["a", "b", "c"])
    assert [rr.next() for _ in range(7)] == ["a", "b", "c", "a", "b", "c", "a"]
    with pytest.raises(ValueError):
        RoundRobin([])
