"""Check over real gRPC against a real `python -m mixer`: deny-list on a source principal, allow
otherwise, validity metadata for the proxy's cache, and the denial visible in /api/denials."""

from __future__ import annotations

import json

import grpc
from envoy.service.auth.v3 import external_auth_pb2
from google.protobuf import json_format

from tests.integration.mixer.harness import start_mixer

SLEEP = "spiffe://cluster.local/ns/default/sa/sleep"
PRODUCTPAGE = "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"

CONFIG = f"""
policy:
  rules:
  - name: deny-sleep
    list:
      attribute: source.principal
      entryType: STRINGS
      entries: ["{SLEEP}"]
      mode: deny
    validDuration: 7s
    validUseCount: 42
  - name: internal-only
    match: {{request.host: details}}
    list:
      attribute: source.ip
      entryType: IP_ADDRESSES
      entries: ["127.0.0.0/8"]
      mode: allow
"""


def check_request(
    principal: str = "", ip: str = "127.0.0.10", host: str = "productpage:9080", path="/productpage"
):
    req = external_auth_pb2.CheckRequest()
    a = req.attributes
    a.source.principal = principal
    a.source.address.socket_address.address = ip
    a.source.address.socket_address.port_value = 40000
    a.request.http.method = "GET"
    a.request.http.host = host
    a.request.http.path = path
    a.request.http.headers.update({":path": path, ":authority": host, "end-user": "jason"})
    return req


def test_deny_list_on_source_principal_gives_403_with_validity(procs, tmp_path):
    mixer = start_mixer(procs, tmp_path, CONFIG)
    stub = mixer.authz()

    denied = stub.Check(check_request(SLEEP), timeout=5)
    assert denied.status.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert denied.HasField("denied_response")
    assert denied.denied_response.status.code == 403
    assert "deny-sleep" in denied.denied_response.body and SLEEP in denied.denied_response.body
    meta = json_format.MessageToDict(denied.dynamic_metadata)
    assert meta["valid_duration_ms"] == 7000 and meta["valid_use_count"] == 42
    assert meta["referenced_attributes"] == ["source.principal"]
    assert meta["mixer_rule"] == "deny-sleep"

    allowed = stub.Check(check_request(PRODUCTPAGE), timeout=5)
    assert allowed.status.code == 0 and allowed.HasField("ok_response")
    meta = json_format.MessageToDict(allowed.dynamic_metadata)
    assert meta["valid_duration_ms"] > 0 and meta["valid_use_count"] > 0
    # the second rule's match read request.host, so a cache must key on it too
    assert meta["referenced_attributes"] == ["source.principal", "request.host"]

    # an allow-list on source IP, only for host details
    outside = stub.Check(check_request(PRODUCTPAGE, ip="10.1.2.3", host="details:9080"), timeout=5)
    assert outside.status.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert "internal-only" in outside.denied_response.body
    inside = stub.Check(check_request(PRODUCTPAGE, ip="127.0.0.11", host="details:9080"), timeout=5)
    assert inside.status.code == 0

    denials = json.loads(mixer.get("/api/denials"))
    assert denials["total"] == 2
    assert (
        denials["events"][-1]["rule"] == "deny-sleep" and denials["events"][-1]["source_principal"] == SLEEP
    )
    assert mixer.metric_sum("mixer_check_total", result="denied") == 2
    assert mixer.metric_sum("mixer_check_total", result="ok") == 2


def test_denier_with_custom_status(procs, tmp_path):
    config = """
policy:
  rules:
  - name: maintenance
    denier: {status: {code: UNAVAILABLE, message: "down for maintenance"}}
    httpStatus: 503
"""
    mixer = start_mixer(procs, tmp_path, config)
    resp = mixer.authz().Check(check_request(PRODUCTPAGE), timeout=5)
    assert resp.status.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert resp.denied_response.status.code == 503
    assert resp.denied_response.body == "UNAVAILABLE: down for maintenance\n"
