"""ConfigStore: all-or-nothing, versions, subscriptions, thread safety."""

from __future__ import annotations

import threading

from pilot.config import problems as P
from pilot.config.parse import parse_text
from pilot.config.store import ConfigStore
from pilot.model.config import ConfigKey
from tests.unit.pilot.config.helpers import DR_ALL, VS_HEAD, errors, load

GOOD_VS = (
    VS_HEAD + "  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v1}\n"
)
BAD_VS = (
    GOOD_VS.replace("name: reviews", "name: ratings")
    .replace("hosts: [reviews]", "hosts: [ratings]")
    .replace("{host: reviews, subset: v1}", "{host: ratings, subset: nope}")
)


def configs(text: str):
    parsed = parse_text(text, "t.yaml")
    assert parsed.ok
    return parsed.configs


def test_all_or_nothing():
    store = ConfigStore()
    load(store, DR_ALL)
    before = store.snapshot()
    problems = store.apply(configs(GOOD_VS + "---\n" + BAD_VS))
    assert errors(problems)
    assert store.snapshot() is before
    assert store.snapshot().get("VirtualService", "default", "reviews") is None


def test_versions_and_unchanged_reapply():
    store = ConfigStore()
    load(store, DR_ALL)
    v = store.snapshot().version
    assert errors(store.apply(configs(GOOD_VS))) == []
    first = store.snapshot().get("VirtualService", "default", "reviews")
    assert store.snapshot().version == v + 1 and first.resource_version > 0
    store.apply(configs(GOOD_VS))
    assert store.snapshot().version == v + 1  # identical content: no new snapshot
    store.apply(configs(GOOD_VS.replace("subset: v1", "subset: v2")))
    assert (
        store.snapshot().get("VirtualService", "default", "reviews").resource_version > first.resource_version
    )


def test_create_only_refuses_existing():
    store = ConfigStore()
    load(store, DR_ALL)
    problems = store.apply(configs(DR_ALL.read_text()), create_only=True)
    assert {p.code for p in problems} == {P.ALREADY_EXISTS}


def test_duplicate_key_in_one_request():
    store = ConfigStore()
    problems = store.apply(configs(DR_ALL.read_text() + "\n---\n" + DR_ALL.read_text()))
    assert {p.code for p in problems if p.is_error} == {P.DUPLICATE}
    assert store.snapshot().all() == []


def test_subscribe_sees_each_change_once_in_order_and_can_unsubscribe():
    store = ConfigStore()
    seen = []
    unsubscribe = store.subscribe(lambda changed, snap: seen.append((changed, snap.version)))
    load(store, DR_ALL)
    assert seen == [
        (
            {
                ConfigKey("DestinationRule", "default", n)
                for n in ("productpage", "reviews", "ratings", "details")
            },
            1,
        )
    ]
    store.apply(configs(BAD_VS))  # refused: no event
    store.apply(configs(GOOD_VS))
    assert seen[-1] == ({ConfigKey("VirtualService", "default", "reviews")}, 2)
    deleted, _ = store.delete(
        [ConfigKey("VirtualService", "default", "reviews"), ConfigKey("Gateway", "x", "y")]
    )
    assert deleted == [ConfigKey("VirtualService", "default", "reviews")]
    assert seen[-1] == ({ConfigKey("VirtualService", "default", "reviews")}, 3)
    unsubscribe()
    store.apply(configs(GOOD_VS))
    assert len(seen) == 3


def test_a_failing_subscriber_does_not_break_the_store():
    store = ConfigStore()
    store.subscribe(lambda c, s: 1 / 0)
    assert errors(load(store, DR_ALL)) == []
    assert len(store.snapshot().all()) == 4


def test_deleting_a_destination_rule_warns_about_users():
    store = ConfigStore()
    load(store, DR_ALL)
    store.apply(configs(GOOD_VS))
    deleted, warnings = store.delete([ConfigKey("DestinationRule", "default", "reviews")])
    assert deleted and [w.code for w in warnings] == [P.SUBSET_NOT_FOUND]


def test_concurrent_applies_are_serialised():
    store = ConfigStore()
    versions = []
    store.subscribe(lambda c, s: versions.append(s.version))

    def worker(i: int) -> None:
        for j in range(20):
            text = (
                "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
                f"metadata: {{name: se-{i}-{j}}}\nspec:\n  hosts: [h{i}-{j}.example]\n"
            )
            assert store.apply(configs(text)) == []

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.snapshot().list("ServiceEntry")) == 80
    assert versions == list(range(1, 81))
