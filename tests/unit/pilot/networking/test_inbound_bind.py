"""Inbound clusters in REDIRECT mode bind 127.0.0.6 (Istio's ``upstream_bind_config``): istio-init lets a
connection from that source over lo through to the app, where the proxy's own connection to its pod IP
would otherwise be sent back to 15006. Local mode (INTERCEPTION_MODE NONE) has no capture: no bind."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pilot.networking import CLUSTER_TYPE, generate
from pilot.networking.protos import to_dict
from proxy.upstream.cluster import build_cluster
from tests.unit.pilot.networking.bookinfo import push, sidecar
from tests.unit.proxy.upstream.helpers import ctx

GOLDEN = Path(__file__).parent / "golden" / "inbound-clusters-redirect.json"
BIND = {"source_address": {"address": "127.0.0.6", "port_value": 0}}
INBOUND = ("inbound|9080||", "InboundPassthroughClusterIpv4")


def clusters(**metadata):
    return {
        c.name: c for c in generate(CLUSTER_TYPE, sidecar("reviews", "v1", "127.0.0.12", **metadata), push())
    }


@pytest.mark.parametrize("metadata", [{"INTERCEPTION_MODE": "REDIRECT"}, {}])  # REDIRECT is the default
def test_redirect_mode_inbound_clusters_bind_the_inbound_passthrough_source(metadata):
    cs = clusters(**metadata)
    for name in INBOUND:
        assert to_dict(cs[name])["upstream_bind_config"] == BIND, name
    outbound = [c for name, c in cs.items() if not name.startswith("inbound") and name not in INBOUND]
    assert outbound and not any(c.HasField("upstream_bind_config") for c in outbound)


def test_local_mode_binds_nothing():
    cs = clusters(INTERCEPTION_MODE="NONE")
    assert not any(c.HasField("upstream_bind_config") for c in cs.values())


def test_the_proxy_accepts_the_inbound_clusters_and_binds_127_0_0_6():
    cs = clusters(INTERCEPTION_MODE="REDIRECT")
    for name in INBOUND:
        assert build_cluster(cs[name], ctx(), name).source_address == ("127.0.0.6", 0)


def test_golden_inbound_clusters_in_redirect_mode():
    cs = clusters(INTERCEPTION_MODE="REDIRECT")
    got = {name: to_dict(cs[name]) for name in INBOUND}
    text = json.dumps(got, indent=2, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(text)
    assert GOLDEN.exists(), f"no golden {GOLDEN.name}: run with UPDATE_GOLDEN=1 and review it"
    assert json.loads(GOLDEN.read_text()) == got
