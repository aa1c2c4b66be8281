"""Headers lookups and edits keep their meaning on the fast paths (loops instead of rebuilt lists)."""

from __future__ import annotations

from proxy.core.headers import Headers


def test_set_replaces_first_value_in_place_and_drops_later_duplicates():
    h = Headers([(":status", "200"), ("a", "1"), ("b", "x"), ("a", "2"), ("c", "y"), ("A", "3")])
    items = h.items()
    h.set("a", "new")
    assert h.items() == [(":status", "200"), ("a", "new"), ("b", "x"), ("c", "y")]
    assert h.items() is items  # edited in place: holders of the list see the change


def test_set_of_an_absent_name_appends_and_pseudo_headers_stay_first():
    h = Headers([(":method", "GET"), ("x", "1")])
    h.set("y", "2")
    h.set(":path", "/")
    assert h.items() == [(":method", "GET"), (":path", "/"), ("x", "1"), ("y", "2")]


def test_remove_counts_and_contains_and_get_are_case_insensitive():
    h = Headers([("Via", "a"), ("x", "1"), ("via", "b")])
    assert "VIA" in h and "nope" not in h and 42 not in h
    assert h.get("VIA") == "a" and h.get("nope", "d") == "d"
    assert h.remove("nope") == 0
    assert h.remove("Via") == 2
    assert h.items() == [("x", "1")]


def test_remove_names_drops_every_listed_name_in_one_pass():
    h = Headers([(":status", "200"), ("connection", "keep-alive"), ("x", "1"), ("keep-alive", "t=5")])
    assert h.remove_names(frozenset({"connection", "keep-alive", "upgrade"})) == 2
    assert h.items() == [(":status", "200"), ("x", "1")]
    assert h.remove_names(frozenset({"connection"})) == 0


def test_set_many_appends_absent_names_and_replaces_present_ones_like_set():
    import random

    rnd = random.Random(7)
    for _ in range(300):
        items = [(rnd.choice(["a", "b", "c", "x-id", "x-md"]), str(i)) for i in range(rnd.randint(0, 6))]
        pairs = (("x-id", "ID"), ("x-md", "MD"))
        fast, slow = Headers([(":status", "200"), *items]), Headers([(":status", "200"), *items])
        fast.set_many(pairs)
        for name, value in pairs:
            slow.set(name, value)
        assert fast.items() == slow.items()
