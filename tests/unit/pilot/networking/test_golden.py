"""Golden tests: the RouteConfiguration and Clusters a Bookinfo sidecar gets for Istio's own task files.

Each golden is JSON (json_format, proto field names) under golden/. ``UPDATE_GOLDEN=1`` rewrites them;
every rewrite must be reviewed by hand against what Istio generates (``istioctl proxy-config``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pilot.networking import CLUSTER_TYPE, ROUTE_TYPE, generate
from pilot.networking.protos import to_dict
from tests.unit.pilot.networking.bookinfo import fqdn, push, sidecar

GOLDEN = Path(__file__).parent / "golden"

CASES = {
    "virtual-service-reviews-v3": "reviews",
    "virtual-service-reviews-50-v3": "reviews",
    "virtual-service-reviews-jason-v2-v3": "reviews",
    "virtual-service-ratings-test-delay": "ratings",
    "fault-injection-details-v1": "details",
}


def render(case: str, host: str) -> dict:
    # destination-rule-all first, then the task file (its own DestinationRule replaces the one above,
    # as `kubectl apply` in that order would).
    p = push("destination-rule-all.yaml", f"{case}.yaml")
    proxy = sidecar("productpage", "v1", "127.0.0.10")
    (rc,) = generate(ROUTE_TYPE, proxy, p, {"9080"})
    rc_dict = to_dict(rc)
    # Only the virtual host under test (the others are the default route, covered elsewhere).
    rc_dict["virtual_hosts"] = [
        vh for vh in rc_dict["virtual_hosts"] if vh["name"] in (f"{fqdn(host)}:9080", "allow_any")
    ]
    clusters = [to_dict(c) for c in generate(CLUSTER_TYPE, proxy, p) if c.name.endswith(f"|{fqdn(host)}")]
    return {"route_configuration": rc_dict, "clusters": clusters}


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case):
    got = render(case, CASES[case])
    path = GOLDEN / f"{case}.json"
    text = json.dumps(got, indent=2, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"no golden {path.name}: run with UPDATE_GOLDEN=1 and review it"
    assert json.loads(path.read_text()) == got, f"{case}: generated config differs from {path.name}"
