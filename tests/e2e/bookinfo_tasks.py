"""Istio's Bookinfo traffic-management tasks as checks a user would make in the browser, shared by the
local-mode (test_mesh_local.py) and transparent-mode (test_mesh_transparent.py) e2e modules.

Each check takes a small mesh interface (`BookinfoMesh`: `page(user)` fetches /productpage through
the gateway, `apply(path)` / `delete(path, check=False)` run `isthmus apply/delete -f` against its
pilot) and an `apply` function from `applying(mesh)`, which applies files from
../shared/istio-samples/bookinfo/networking verbatim and deletes them again afterwards.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from tests.support.mesh import SAMPLES, eventually, served_by, stars

STARS = {"reviews-v1": "none", "reviews-v2": "black", "reviews-v3": "red"}


class BookinfoMesh(Protocol):
    def page(self, user: str | None = None) -> str: ...

    def apply(self, path: str | Path) -> str: ...

    def delete(self, path: str | Path, check: bool = True) -> None: ...


Apply = Callable[..., None]


@contextmanager
def applying(mesh: BookinfoMesh) -> Iterator[Apply]:
    """`apply(*names)` applies task files verbatim; on exit they are deleted again (newest first;
    destination-rule-all stays, as pilot loaded it) and the base config answers again."""
    files: list[Path] = []

    def apply(*names: str) -> None:
        for name in names:
            files.append(SAMPLES / name)
            mesh.apply(SAMPLES / name)

    try:
        yield apply
    finally:
        for f in reversed(files):
            if f.name != "destination-rule-all.yaml":
                mesh.delete(f, check=False)
        # back to the base config: every reviews version answers again
        eventually(lambda: {served_by(mesh.page()) for _ in range(12)} >= {"reviews-v1", "reviews-v3"}, 30)


def gateway_reaches_productpage_details_reviews_ratings(mesh: BookinfoMesh) -> None:
    html = mesh.page()
    assert "The Comedy of Errors" in html
    assert "Book Details" in html and "PublisherA" in html  # details, through productpage's sidecar
    assert "Book Reviews" in html and "Reviewer1" in html  # reviews
    seen: Counter = Counter()
    for _ in range(30):
        p = mesh.page()
        seen[(served_by(p), stars(p))] += 1
    # reviews v2/v3 call ratings (stars); v1 does not; the sidecar balances all three
    assert {v for v, _ in seen} == set(STARS), seen
    assert all(s == STARS[v] for v, s in seen), seen


def virtual_service_all_v1(mesh: BookinfoMesh, apply: Apply) -> None:
    apply("virtual-service-all-v1.yaml")
    eventually(lambda: all(stars(mesh.page()) == "none" for _ in range(5)))
    pages = [mesh.page() for _ in range(100)]
    assert Counter(stars(p) for p in pages) == {"none": 100}
    assert {served_by(p) for p in pages} == {"reviews-v1"}


def virtual_service_reviews_v3(mesh: BookinfoMesh, apply: Apply) -> None:
    apply("virtual-service-reviews-v3.yaml")
    eventually(lambda: all(stars(mesh.page()) == "red" for _ in range(5)))
    assert Counter(stars(mesh.page()) for _ in range(50)) == {"red": 50}


def virtual_service_reviews_50_v3(mesh: BookinfoMesh, apply: Apply) -> None:
    apply("virtual-service-reviews-50-v3.yaml")
    eventually(lambda: "reviews-v2" not in {served_by(mesh.page()) for _ in range(20)})
    count = Counter(stars(mesh.page()) for _ in range(200))
    assert set(count) <= {"none", "red"}, count
    assert 80 <= count["red"] <= 120, count  # 50/50 within ±10% over 200 requests


def virtual_service_reviews_jason_v2_v3(mesh: BookinfoMesh, apply: Apply) -> None:
    apply("virtual-service-reviews-jason-v2-v3.yaml")
    eventually(lambda: stars(mesh.page("jason")) == "black" and stars(mesh.page()) == "red")
    jason = [mesh.page("jason") for _ in range(20)]
    assert {served_by(p) for p in jason} == {"reviews-v2"}  # the route: every request of jason's to v2
    # and v2 shows black stars (a page whose ratings call failed says so: seen once in a run)
    assert all(stars(p) == "black" or "Ratings service is currently unavailable" in p for p in jason)
    assert sum(stars(p) == "black" for p in jason) >= 19
    others = [mesh.page() for _ in range(20)] + [mesh.page("alice") for _ in range(10)]
    assert {served_by(p) for p in others} == {"reviews-v3"}  # everyone else to v3
    # v3 shows red stars (as for jason, a page whose ratings call failed under load says so)
    assert all(stars(p) == "red" or "Ratings service is currently unavailable" in p for p in others)
    assert sum(stars(p) == "red" for p in others) >= 29


def ratings_test_delay(mesh: BookinfoMesh, apply: Apply) -> None:
    # Istio's task: 7 s delay ratings for jason; productpage's timeout to reviews (3 s + 1 retry) expires
    apply("virtual-service-all-v1.yaml", "virtual-service-reviews-test-v2.yaml")
    apply("virtual-service-ratings-test-delay.yaml")
    eventually(lambda: stars(mesh.page()) == "none")
    started = time.monotonic()
    html = eventually(
        lambda: (p := mesh.page("jason")) and "reviews are currently unavailable" in p and p, 40
    )
    assert "Error fetching product reviews!" in html
    assert "Sorry, product reviews are currently unavailable for this book." in html
    assert time.monotonic() - started >= 3  # it is the delay that did it
    assert stars(mesh.page()) == "none"  # everyone else: v1, no delay


def ratings_test_abort(mesh: BookinfoMesh, apply: Apply) -> None:
    apply("virtual-service-all-v1.yaml", "virtual-service-reviews-test-v2.yaml")
    apply("virtual-service-ratings-test-abort.yaml")
    html = eventually(
        lambda: (p := mesh.page("jason")) and "Ratings service is currently unavailable" in p and p
    )
    assert served_by(html) == "reviews-v2"
    assert "Ratings service is currently unavailable" not in mesh.page()


def fault_injection_details_v1(mesh: BookinfoMesh, apply: Apply) -> None:
    apply("fault-injection-details-v1.yaml")
    html = eventually(lambda: (p := mesh.page()) and "Error fetching product details!" in p and p)
    assert "Sorry, product details are currently unavailable for this book." in html
    assert "Book Reviews" in html  # the rest of the page still renders


# Istio's task files and their checks, in the order Istio's docs walk through them; both e2e modules
# run each one as `test_bookinfo_task[<name>]`.
TASKS: dict[str, Callable[[BookinfoMesh, Apply], None]] = {
    "virtual-service-all-v1": virtual_service_all_v1,
    "virtual-service-reviews-v3": virtual_service_reviews_v3,
    "virtual-service-reviews-50-v3": virtual_service_reviews_50_v3,
    "virtual-service-reviews-jason-v2-v3": virtual_service_reviews_jason_v2_v3,
    "virtual-service-ratings-test-delay": ratings_test_delay,
    "virtual-service-ratings-test-abort": ratings_test_abort,
    "fault-injection-details-v1": fault_injection_details_v1,
}
