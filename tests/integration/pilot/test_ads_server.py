"""pilot's ADS server end to end: a real `python -m pilot`, a Python ADS client over real gRPC."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.pilot.ads_client import (
    CDS,
    EDS,
    LDS,
    RDS,
    AdsClient,
    resource_names,
    route_names,
    unpack_all,
)
from tests.integration.pilot.pilot_harness import SERVICES_YAML, start_pilot

NODE = "sidecar~127.0.0.30~productpage-1.default~default.svc.cluster.local"
META = {"NAMESPACE": "default", "LABELS": {"app": "productpage", "version": "v1"}}
RATINGS = "ratings.default.svc.cluster.local"
VS_PATH = "/apis/networking.istio.io/v1/namespaces/default/virtualservices/ratings"
VS_TIMEOUT = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings]
  http:
  - timeout: 7s
    route:
    - destination: {host: ratings}
"""


@pytest.fixture
def pilot(procs, tmp_path):
    (tmp_path / "services.yaml").write_text(SERVICES_YAML)
    return start_pilot(procs, tmp_path)


def subscribe_all(client: AdsClient) -> dict:
    """Envoy's order: CDS, then EDS for its EDS clusters, LDS, then RDS for the listeners' routes. ACK all."""
    got = {}
    client.request(CDS)
    got[CDS] = client.recv_type(CDS)
    client.ack(got[CDS])
    eds_names = [c.name for c in unpack_all(got[CDS]) if c.type == c.EDS]
    assert any(RATINGS in n for n in eds_names), eds_names
    client.request(EDS, eds_names)
    got[EDS] = client.recv_type(EDS)
    client.ack(got[EDS])
    client.request(LDS)
    got[LDS] = client.recv_type(LDS)
    client.ack(got[LDS])
    routes = sorted(route_names(got[LDS]))
    assert routes, "no listener asks for RDS"
    client.request(RDS, routes)
    got[RDS] = client.recv_type(RDS)
    client.ack(got[RDS])
    return got


def wait_until(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def all_synced(pilot, node_id):
    entry = pilot.syncz_entry(node_id)
    return all(entry[t] == "SYNCED" for t in ("cds", "eds", "lds", "rds")) and entry


def test_sotw_gets_every_type_acks_and_a_config_change_via_the_api_is_pushed(pilot):
    client = AdsClient(pilot.grpc, NODE, META)
    try:
        got = subscribe_all(client)
        wait_until(lambda: all_synced(pilot, NODE))
        status, body = pilot.put(VS_PATH, VS_TIMEOUT)
        assert status in (200, 201), body
        pushed = {}
        while RDS not in pushed:  # a full push, CDS first; types whose ACKed content is unchanged skipped
            response = client.recv()
            pushed[response.type_url] = response
            client.ack(response)
        # the VirtualService changes only the route config: clusters, endpoints and listeners are the
        # ones the proxy ACKed, so they are not sent again (Envoy would take them as a no-op)
        assert list(pushed) == [RDS]
        assert pushed[RDS].version_info != got[RDS].version_info
        assert "7s" in str(unpack_all(pushed[RDS])) or "seconds: 7" in str(unpack_all(pushed[RDS]))
        wait_until(lambda: all_synced(pilot, NODE))
        metrics = pilot.get_text("/metrics")
        families = {f.name: f for f in text_string_to_metric_families(metrics)}
        assert families["pilot_xds"].samples[0].value == 1
        pushes = {
            s.labels["type"]: s.value
            for s in families["pilot_xds_pushes"].samples
            if s.name.endswith("_total")
        }
        assert pushes["rds"] >= 2 and pushes["cds"] >= 1
        assert "pilot_proxy_convergence_time" in families
    finally:
        client.close()


def test_a_nack_shows_as_nacked_in_syncz_and_proxy_status(pilot):
    client = AdsClient(pilot.grpc, NODE, META)
    try:
        client.request(CDS)
        cds = client.recv_type(CDS)
        client.request(
            CDS, nonce=cds.nonce, version=cds.version_info, error="cluster x: unknown lb_policy FOO"
        )
        entry = wait_until(lambda: (e := pilot.syncz_entry(NODE))["cds"] == "NACKED" and e)
        assert entry["types"]["CDS"]["error"] == "cluster x: unknown lb_policy FOO"
        assert entry["lds"] == "NOT SENT"
        out = subprocess.run(
            [sys.executable, "-m", "isthmus", "proxy-status", "--pilot", pilot.http],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.returncode == 0, out.stderr
        header, row = out.stdout.splitlines()[:2]
        assert header.split()[:6] == ["NAME", "CLUSTER", "CDS", "LDS", "EDS", "RDS"]
        assert row.startswith("productpage-1.default") and "NACKED" in row
        assert "cluster x: unknown lb_policy FOO" in out.stdout
        metrics = pilot.get_text("/metrics")
        rejects = [
            s
            for f in text_string_to_metric_families(metrics)
            if f.name == "pilot_total_xds_rejects"
            for s in f.samples
            if s.labels.get("type") == "cds" and s.name.endswith("_total")
        ]
        assert rejects and rejects[0].value == 1
    finally:
        client.close()


def test_endpoint_only_change_is_pushed_as_eds_only(pilot, tmp_path):
    client = AdsClient(pilot.grpc, NODE, META)
    try:
        got = subscribe_all(client)
        before = wait_until(lambda: all_synced(pilot, NODE))
        (tmp_path / "services.yaml").write_text(SERVICES_YAML.replace("127.0.0.21", "127.0.0.22"))
        response = client.recv_type(EDS)  # nothing before it: CDS would come first in a full push
        assert "127.0.0.22" in str(unpack_all(response)) and "127.0.0.21" not in str(unpack_all(response))
        client.ack(response)
        after = wait_until(lambda: all_synced(pilot, NODE))
        for t in ("CDS", "LDS", "RDS"):
            assert after["types"][t]["version_sent"] == before["types"][t]["version_sent"], t
        assert after["types"]["EDS"]["version_sent"] != before["types"]["EDS"]["version_sent"]
        assert resource_names(response) == resource_names(got[EDS])
    finally:
        client.close()


def test_bad_config_via_the_api_is_rejected_and_the_served_config_stays(pilot):
    client = AdsClient(pilot.grpc, NODE, META)
    try:
        subscribe_all(client)
        before = wait_until(lambda: all_synced(pilot, NODE))
        dump_before = pilot.get_json(f"/debug/config_dump?proxyID={NODE}")
        bad = VS_TIMEOUT.replace("timeout: 7s", "timeout: 7s\n    noSuchField: 1")
        status, body = pilot.put(VS_PATH, bad)
        assert status in (400, 422) and "noSuchField" in str(body)
        missing_subset = VS_TIMEOUT.replace("{host: ratings}", "{host: ratings, subset: v9}")
        status, body = pilot.put(VS_PATH, missing_subset)
        assert status in (400, 422) and "v9" in str(body)
        status, body = pilot.put(VS_PATH, "kind: [unclosed")
        assert status == 400
        assert (
            pilot.get_json(f"/debug/config_dump?proxyID={NODE}")["configs"][1:] == dump_before["configs"][1:]
        )
        after = pilot.syncz_entry(NODE)
        assert {t: s["version_sent"] for t, s in after["types"].items()} == {
            t: s["version_sent"] for t, s in before["types"].items()
        }
        assert not [c for c in pilot.get_json("/debug/configz") if c["kind"] == "VirtualService"]
        errors = [
            s
            for f in text_string_to_metric_families(pilot.get_text("/metrics"))
            if f.name == "pilot_total_config_validation_errors"
            for s in f.samples
            if s.name.endswith("_total")
        ]
        assert errors and errors[0].value == 3
    finally:
        client.close()


def test_delta_sends_only_changed_resources(pilot):
    client = AdsClient(pilot.grpc, NODE, META, delta=True)
    try:
        client.delta_request(CDS)
        cds = client.recv_type(CDS)
        assert any(RATINGS in r.name for r in cds.resources)
        client.ack(cds)
        client.delta_request(LDS)
        lds = client.recv_type(LDS)
        client.ack(lds)
        routes = sorted(route_names(lds))
        client.delta_request(RDS, subscribe=routes)
        rds = client.recv_type(RDS)
        client.ack(rds)
        assert {r.name for r in rds.resources} == set(routes)
        wait_until(lambda: (e := pilot.syncz_entry(NODE))["rds"] == "SYNCED" and e["stream"] == "delta")
        status, body = pilot.put(VS_PATH, VS_TIMEOUT)
        assert status in (200, 201), body
        response = client.recv()
        # the VirtualService changes one route config; clusters and listeners are unchanged: not resent
        assert response.type_url == RDS, response.type_url
        changed = {r.name for r in response.resources}
        assert changed and changed <= set(routes) and not response.removed_resources
    finally:
        client.close()


def test_a_node_id_that_is_not_istio_s_is_refused_with_a_clear_error(pilot):
    client = AdsClient(pilot.grpc, "not-an-istio-node-id")
    try:
        client.request(CDS)
        with pytest.raises(Exception) as failure:
            client.recv(10)
        assert "node id" in str(failure.value)
    finally:
        client.close()
