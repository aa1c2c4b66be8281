"""Two xDS-server gaps, end to end against a real `python -m pilot` over real gRPC:

* after a Delta NACK pilot keeps the proxy's last ACKed versions, so a later push sends the rejected
  resource again (before, pilot took the rejected version as held and never resent it);
* files the `--config-dir` watcher rejects count in pilot_total_config_validation_errors.
"""

from __future__ import annotations

import time

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.pilot.ads_client import CDS, AdsClient, unpack_all
from tests.integration.pilot.pilot_harness import SERVICES_YAML, start_pilot
from tests.integration.pilot.test_ads_server import META, NODE, VS_PATH, VS_TIMEOUT, wait_until

RATINGS_CLUSTER = "outbound|9080||ratings.default.svc.cluster.local"
DR_PATH = "/apis/networking.istio.io/v1/namespaces/default/destinationrules/ratings"
DR_LIMIT = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: default}
spec:
  host: ratings
  trafficPolicy: {connectionPool: {tcp: {maxConnections: 7}}}
"""


def test_a_delta_nack_keeps_the_acked_version_and_a_later_push_resends_the_resource(procs, tmp_path):
    (tmp_path / "services.yaml").write_text(SERVICES_YAML)
    pilot = start_pilot(procs, tmp_path)
    client = AdsClient(pilot.grpc, NODE, META, delta=True)
    try:
        client.delta_request(CDS)
        first = client.recv_type(CDS)
        client.ack(first)
        acked = {r.name: r.version for r in first.resources}
        wait_until(lambda: pilot.syncz_entry(NODE)["cds"] == "SYNCED")

        status, body = pilot.put(DR_PATH, DR_LIMIT)  # changes the ratings cluster
        assert status in (200, 201), body
        changed = client.recv_type(CDS)
        assert [r.name for r in changed.resources] == [RATINGS_CLUSTER]
        rejected_version = changed.resources[0].version
        assert rejected_version != acked[RATINGS_CLUSTER]
        client.delta_request(CDS, nonce=changed.nonce, error="cluster ratings: circuit breaker refused")
        entry = wait_until(lambda: (e := pilot.syncz_entry(NODE))["cds"] == "NACKED" and e)
        assert "circuit breaker refused" in entry["types"]["CDS"]["error"]

        # an unrelated change: the proxy still holds the old ratings cluster, so pilot sends it again
        status, body = pilot.put(VS_PATH, VS_TIMEOUT)
        assert status in (200, 201), body
        again = client.recv_type(CDS)
        assert [(r.name, r.version) for r in again.resources] == [(RATINGS_CLUSTER, rejected_version)]
        (cluster,) = unpack_all(again)
        assert cluster.circuit_breakers.thresholds[0].max_connections.value == 7
        client.ack(again)
        wait_until(lambda: pilot.syncz_entry(NODE)["cds"] == "SYNCED")
    finally:
        client.close()


def validation_errors(pilot) -> dict[str, float]:
    return {
        s.labels["source"]: s.value
        for f in text_string_to_metric_families(pilot.get_text("/metrics"))
        if f.name == "pilot_total_config_validation_errors"
        for s in f.samples
        if s.name.endswith("_total")
    }


def test_files_rejected_by_the_config_dir_watcher_are_counted(procs, tmp_path):
    (tmp_path / "services.yaml").write_text(SERVICES_YAML)
    (tmp_path / "bad.yaml").write_text("kind: [unclosed")
    pilot = start_pilot(procs, tmp_path)  # ready once the directory is loaded
    assert validation_errors(pilot) == {"config-dir": 1}
    assert [c for c in pilot.get_json("/debug/configz") if c["kind"] == "ServiceEntry"]  # the good file
    # another bad version of the file counts again; unchanged files are not counted on every poll
    (tmp_path / "bad.yaml").write_text(VS_TIMEOUT.replace("timeout: 7s", "timeout: 7s\n    noSuchField: 1"))
    deadline = time.monotonic() + 10
    while validation_errors(pilot).get("config-dir") != 2:
        assert time.monotonic() < deadline, validation_errors(pilot)
        time.sleep(0.05)
    (tmp_path / "bad.yaml").write_text(VS_TIMEOUT)  # fixed: applied, not counted
    wait_until(lambda: [c for c in pilot.get_json("/debug/configz") if c["kind"] == "VirtualService"])
    assert validation_errors(pilot) == {"config-dir": 2}
