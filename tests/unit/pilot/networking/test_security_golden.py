"""Golden tests for the security translation: the ``virtualInbound`` listener a Bookinfo reviews-v1
sidecar gets for one PeerAuthentication case and one AuthorizationPolicy case.

``UPDATE_GOLDEN=1`` rewrites them; every rewrite must be reviewed by hand against what Istio generates
(``istioctl proxy-config listener <pod> --port 15006 -o json``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pilot.networking import LISTENER_TYPE, generate
from pilot.networking.protos import to_dict
from tests.unit.pilot.networking.bookinfo import config, push, sidecar

GOLDEN = Path(__file__).parent / "golden"
SEC = "security.istio.io"

CASES = {
    # STRICT for the namespace, but reviews' port 9080 stays PERMISSIVE (portLevelMtls).
    "peer-authentication-strict-port-permissive": [
        config("PeerAuthentication", "default", {"mtls": {"mode": "STRICT"}}, "default", SEC),
        config(
            "PeerAuthentication",
            "reviews",
            {
                "selector": {"matchLabels": {"app": "reviews"}},
                "portLevelMtls": {"9080": {"mode": "PERMISSIVE"}},
            },
            "default",
            SEC,
        ),
    ],
    # Istio's authorization task: deny /admin*, allow GET from productpage and from the default namespace
    # when end-user is jason.
    "authorization-policy-reviews": [
        config("PeerAuthentication", "default", {"mtls": {"mode": "STRICT"}}, "istio-system", SEC),
        config(
            "AuthorizationPolicy",
            "deny-admin",
            {"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin*"]}}]}]},
            "default",
            SEC,
        ),
        config(
            "AuthorizationPolicy",
            "reviews-viewer",
            {
                "selector": {"matchLabels": {"app": "reviews"}},
                "action": "ALLOW",
                "rules": [
                    {
                        "from": [
                            {"source": {"principals": ["cluster.local/ns/default/sa/bookinfo-productpage"]}}
                        ],
                        "to": [{"operation": {"methods": ["GET"]}}],
                    },
                    {
                        "from": [{"source": {"namespaces": ["default"]}}],
                        "when": [{"key": "request.headers[end-user]", "values": ["jason"]}],
                    },
                ],
            },
            "default",
            SEC,
        ),
    ],
}


def render(case: str) -> dict:
    p = push(configs=CASES[case])
    (vi,) = generate(LISTENER_TYPE, sidecar("reviews", "v1", "127.0.0.12"), p, {"virtualInbound"})
    return to_dict(vi)


@pytest.mark.parametrize("case", sorted(CASES))
def test_security_golden(case):
    got = render(case)
    path = GOLDEN / f"{case}.json"
    text = json.dumps(got, indent=2, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert path.exists(), f"no golden {path.name}: run with UPDATE_GOLDEN=1 and review it"
    assert json.loads(path.read_text()) == got, f"{case}: generated config differs from {path.name}"
