import pytest

from tests.support.net import wait_for_http
from tests.support.processes import ProcessGroup

from .helpers import Recorder, start_app, upstream_env


@pytest.fixture(scope="module")
def bookinfo_apps():
    """The whole of Bookinfo, healthy, started once per module: {name: App}."""
    group = ProcessGroup()
    try:
        ratings = start_app(group, "ratings", wait=False)
        details = start_app(group, "details", wait=False)
        reviews = {
            v: start_app(
                group, "reviews", {"SERVICE_VERSION": v, **upstream_env("ratings", ratings)}, wait=False
            )
            for v in ("v1", "v2", "v3")
        }
        apps = {"ratings": ratings, "details": details, **{f"reviews-{v}": a for v, a in reviews.items()}}
        for app in apps.values():
            wait_for_http(f"{app.url}/health", timeout=30, proc=app.proc)
        apps["productpage"] = start_app(
            group,
            "productpage",
            {
                **upstream_env("details", details),
                **upstream_env("reviews", reviews["v2"]),
                **upstream_env("ratings", ratings),
            },
        )
        yield apps
    finally:
        group.stop_all()


@pytest.fixture
def recorder():
    """Make Recorders with `recorder({path: json}, hold=None)`; all are closed after the test."""
    made: list[Recorder] = []

    def make(responses, **kw) -> Recorder:
        made.append(Recorder(responses, **kw))
        return made[-1]

    yield make
    for r in made:
        r.close()
