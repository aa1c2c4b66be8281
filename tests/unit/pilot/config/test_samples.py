"""Every shared Istio sample parses and validates as Istio users apply them."""

from __future__ import annotations

import pytest

from pilot.config.parse import load_paths, parse_text
from pilot.config.problems import NOT_TRANSLATED
from pilot.config.store import ConfigStore
from tests.unit.pilot.config.helpers import DR_ALL, NETWORKING, SAMPLES, errors, load

SAMPLE_FILES = sorted(NETWORKING.glob("*.yaml"))


def test_the_samples_are_there():
    assert len(SAMPLE_FILES) >= 20, f"shared samples not found under {NETWORKING}"


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.name)
def test_sample_parses_without_problems(path):
    parsed = parse_text(path.read_text(), str(path))
    assert parsed.problems == []
    assert parsed.configs
    for c in parsed.configs:
        assert c.source == str(path)
        assert c.namespace in ("default", "istio-system")


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.name)
def test_sample_applies_after_the_destination_rules(path):
    # Istio's traffic-management tasks apply destination-rule-all.yaml first; the VirtualServices
    # reference its subsets. On its own a VirtualService with a subset is refused (see test_semantic).
    store = ConfigStore()
    assert errors(load(store, DR_ALL)) == []
    assert errors(load(store, path)) == []
    parsed = parse_text(path.read_text(), str(path))
    for c in parsed.configs:
        stored = store.snapshot().get(c.kind, c.namespace, c.name)
        assert stored is not None and stored.spec == c.spec


def test_all_samples_one_after_another_in_one_store():
    """The order a user follows the tasks in: each file replaces the same-named resources."""
    store = ConfigStore()
    for path in [DR_ALL, *SAMPLE_FILES]:
        if path.name == "virtual-service-details-v2.yaml":
            load(store, DR_ALL)  # fault-injection-details-v1.yaml left a details rule with only v1
        assert errors(load(store, path)) == [], path.name


def test_envoyfilter_ratelimit_sample_is_accepted_and_translated():
    """Issue 7 applies EnvoyFilter patches (pilot/networking/envoyfilter.py): no "translated later"
    warning at apply time any more; what a patch cannot do is a translation warning."""
    path = SAMPLES / "productpage_envoy_ratelimit.yaml"
    store = ConfigStore()
    problems = load(store, path)
    assert errors(problems) == []
    assert [p for p in problems if p.code == NOT_TRANSLATED] == []
    assert len(store.snapshot().list("EnvoyFilter", "istio-system")) == 2


def test_platform_manifest_kubernetes_objects_are_reported_not_applied():
    parsed = load_paths([SAMPLES / "platform" / "bookinfo.yaml"])
    assert parsed.configs == []
    assert parsed.others and {d["kind"] for d in parsed.others} >= {"Service", "Deployment"}
    assert all("not an Istio kind" in p.message for p in parsed.problems)
