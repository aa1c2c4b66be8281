"""Fault injection through a real proxy process: abort and delay (configured and header-driven),
with FI/DI in the access log and the fault stats."""

from __future__ import annotations

import threading
import time

import httpx

from tests.integration.proxy.routing_support import start_mesh

FAULT = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
ROUTES = [{"name": "to_a", "match": {"prefix": "/"}, "route": {"cluster": "a"}}]


def fault_filter(**cfg) -> list[dict]:
    return [{"name": "envoy.filters.http.fault", "typed_config": {"@type": FAULT, **cfg}}]


def test_abort_for_every_request(procs, tmp_path):
    m = start_mesh(
        procs,
        tmp_path,
        ROUTES,
        http_filters=fault_filter(abort={"http_status": 503, "percentage": {"numerator": 100}}),
    )
    with httpx.Client(base_url=m.base, timeout=5) as c:
        for _ in range(3):
            r = c.get("/")
            assert (r.status_code, r.text) == (503, "fault filter abort")
    assert [(e["code"], e["flags"]) for e in m.log_entries(3)] == [(503, "FI")] * 3
    assert m.stat("http.ingress.fault.aborts_injected") == 3
    assert m.stat("cluster.a.upstream_rq_total") == 0  # aborted before the router


def test_fixed_delay_then_proxied(procs, tmp_path):
    m = start_mesh(
        procs,
        tmp_path,
        ROUTES,
        http_filters=fault_filter(delay={"fixed_delay": "0.3s", "percentage": {"numerator": 100}}),
    )
    started = time.monotonic()
    r = httpx.get(m.base + "/", timeout=5)
    elapsed = time.monotonic() - started
    assert r.status_code == 200 and r.json()["upstream"] == "a"
    assert elapsed >= 0.3  # the configured delay happened (a behaviour check, not a performance bound)
    assert m.log_entries(1)[0]["flags"] == "DI"
    assert m.stat("http.ingress.fault.delays_injected") == 1


def test_header_controlled_abort_and_delay(procs, tmp_path):
    m = start_mesh(
        procs,
        tmp_path,
        ROUTES,
        http_filters=fault_filter(
            abort={"header_abort": {}, "percentage": {"numerator": 100}},
            delay={"header_delay": {}, "percentage": {"numerator": 100}},
        ),
    )
    with httpx.Client(base_url=m.base, timeout=5) as c:
        assert c.get("/").status_code == 200  # no fault headers: no fault
        r = c.get("/", headers={"x-envoy-fault-abort-request": "429"})
        assert (r.status_code, r.text) == (429, "fault filter abort")
        started = time.monotonic()
        r = c.get("/", headers={"x-envoy-fault-delay-request": "200"})
        assert r.status_code == 200 and time.monotonic() - started >= 0.2
    assert [e["flags"] for e in m.log_entries(3)] == ["-", "FI", "DI"]


def test_zero_percent_injects_nothing(procs, tmp_path):
    m = start_mesh(
        procs,
        tmp_path,
        ROUTES,
        http_filters=fault_filter(abort={"http_status": 500, "percentage": {"numerator": 0}}),
    )
    with httpx.Client(base_url=m.base, timeout=5) as c:
        assert all(c.get("/").status_code == 200 for _ in range(20))
    assert m.stat("http.ingress.fault.aborts_injected") == 0


def test_max_active_faults_lets_overflow_through_undelayed(procs, tmp_path):
    m = start_mesh(
        procs,
        tmp_path,
        ROUTES,
        http_filters=fault_filter(
            delay={"fixed_delay": "1.5s", "percentage": {"numerator": 100}}, max_active_faults=1
        ),
    )
    first: dict = {}
    t = threading.Thread(target=lambda: first.update(r=httpx.get(m.base + "/", timeout=10)))
    t.start()
    try:
        deadline = time.monotonic() + 5
        while m.stat("http.ingress.fault.active_faults") < 1:
            assert time.monotonic() < deadline, "the first request never entered the delay"
            time.sleep(0.02)
        r = httpx.get(m.base + "/", timeout=5)
        assert r.status_code == 200
        assert first.get("r") is None  # the delayed request is still waiting: this one was not delayed
    finally:
        t.join(10)
    assert first["r"].status_code == 200
    assert m.stat("http.ingress.fault.faults_overflow") == 1
    assert sorted(e["flags"] for e in m.log_entries(2)) == ["-", "DI"]
