"""`python -m proxy --concurrency 2`: two real worker processes share the listener (SO_REUSEPORT),
count together in admin /stats, reconfigure together from a real xDS server, a killed worker comes
back, and SIGTERM (or the main's death) leaves no process behind."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from proxy.xds import api
from tests.integration.proxy.harness import (
    RunningProxy,
    admin_block,
    http_listener,
    start_upstream,
    static_cluster,
)
from tests.integration.proxy.xds_support import bootstrap as xds_bootstrap
from tests.integration.proxy.xds_support import http_listener as xds_http_listener
from tests.integration.proxy.xds_support import routes, static, wait_until
from tests.support.net import free_port, wait_for_http, wait_for_port

READY_TIMEOUT_S = 90.0  # N fresh interpreters on a busy 2-core machine


def start_proxy(procs, bootstrap: dict, *args: str, wait_ports: tuple[int, ...] = ()) -> RunningProxy:
    """The harness's start_proxy with a wait sized for several worker processes."""
    bootstrap = dict(bootstrap, admin=admin_block(free_port()))
    admin_port = bootstrap["admin"]["address"]["socket_address"]["port_value"]
    path = Path(tempfile.mkstemp(prefix="isthmus-bootstrap-", suffix=".yaml")[1])
    path.write_text(yaml.safe_dump(bootstrap))
    proc = procs.python("-m", "proxy", "-c", str(path), *args)
    wait_for_http(f"http://127.0.0.1:{admin_port}/ready", timeout=READY_TIMEOUT_S, proc=proc)
    for port in wait_ports:
        wait_for_port("127.0.0.1", port, proc=proc)
    return RunningProxy(proc, admin_port, path)


def _route(cluster: str) -> dict:
    return {
        "name": "local",
        "virtual_hosts": [
            {
                "name": "all",
                "domains": ["*"],
                "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}],
            }
        ],
    }


def _get_new_connection(port: int, path: str = "/") -> tuple[int, dict]:
    """One request on its own connection (a new connection is what SO_REUSEPORT spreads)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"connection": "close"})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, (json.loads(body) if resp.status == 200 else {})
    finally:
        conn.close()


def _admin(proxy, path: str):
    with urllib.request.urlopen(proxy.admin + path, timeout=10) as r:
        body = r.read()
    return json.loads(body) if path.startswith(("/workers", "/stats?format=json")) else body.decode()


def _counter(proxy, name: str) -> int:
    for line in _admin(proxy, "/stats?filter=^" + name.replace(".", r"\.") + "$").splitlines():
        k, _, v = line.partition(": ")
        if k == name:
            return int(v)
    return 0


def _wait_acked(xds, type_url: str, version: str, timeout: float = 30.0) -> None:
    """Wait until the proxy ACKed the response carrying `version` (SotW or Delta)."""

    def carries(r) -> bool:
        m = r.message
        return r.type_url == type_url and version in (
            getattr(m, "version_info", None),
            getattr(m, "system_version_info", None),
        )

    resp = xds.wait_for_response(carries, timeout)
    xds.wait_for_request(
        lambda r: r.type_url == type_url and r.response_nonce == resp.message.nonce and not r.is_nack, timeout
    )


def _connect_refused(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(5)
        return s.connect_ex(("127.0.0.1", port)) != 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purpose
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def _static_proxy(procs, upstream_port: int, concurrency: int = 2):
    port = free_port()
    bootstrap = {
        "static_resources": {
            "listeners": [http_listener(port, _route("app"))],
            "clusters": [static_cluster("app", [upstream_port])],
        }
    }
    proxy = start_proxy(
        procs, bootstrap, "--concurrency", str(concurrency), "--drain-time-s", "1", wait_ports=(port,)
    )
    return proxy, port


def test_two_workers_serve_and_count_together(procs):
    up = start_upstream(procs, "A")
    proxy, port = _static_proxy(procs, up)
    workers = _admin(proxy, "/workers")["workers"]
    pids = {w["pid"] for w in workers}
    assert len(pids) == 2 and proxy.proc.pid not in pids
    assert all(w["ready"] for w in workers)

    sent = 60
    for _ in range(sent):
        status, body = _get_new_connection(port)
        assert status == 200 and body["upstream"] == "A"

    # Every connection was served by one of the two workers, and both served some.
    workers = _admin(proxy, "/workers")["workers"]
    assert all(w["downstream_rq_total"] > 0 for w in workers), workers
    assert sum(w["downstream_rq_total"] for w in workers) == sent
    # Admin's /stats is the sum over the workers: exactly what was sent, in counters and histograms.
    assert _counter(proxy, "http.ingress.downstream_rq_total") == sent
    assert _counter(proxy, "http.ingress.downstream_rq_2xx") == sent
    assert _counter(proxy, "cluster.app.upstream_rq_total") == sent
    stats = _admin(proxy, "/stats?format=json")["stats"]
    hist = next(s for s in stats if s.get("histograms"))["histograms"]
    rq_time = next(h for h in hist["computed_quantiles"] if h["name"] == "http.ingress.downstream_rq_time")
    assert rq_time["values"], rq_time
    prom = _admin(proxy, "/stats/prometheus")
    assert (
        'envoy_http_downstream_rq_xx{envoy_response_code_class="2",envoy_http_conn_manager_prefix="ingress"} 60'
        in prom
    )
    # /clusters: the main's view of health, with the workers' per-host traffic.
    clusters = _admin(proxy, "/clusters")
    assert f"app::127.0.0.1:{up}::rq_total::{sent}" in clusters.splitlines()
    assert f"app::127.0.0.1:{up}::health_flags::healthy" in clusters.splitlines()
    # The config gauges are the main's, not N times it.
    assert _counter(proxy, "server.concurrency") == 2
    assert _counter(proxy, "cluster_manager.active_clusters") == 1


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_xds_change_reaches_every_worker_before_the_ack(procs, xds, delta):
    a, b = start_upstream(procs, "A"), start_upstream(procs, "B")
    port = free_port()
    xds.set_resources(api.CLUSTER, [static("a", a), static("b", b)])
    xds.set_resources(api.LISTENER, [xds_http_listener("ingress", port, "main")])
    xds.set_resources(api.ROUTE, [routes("main", ("/", "a"))])
    proxy = start_proxy(
        procs, xds_bootstrap(xds.port, delta), "--concurrency", "2", "--drain-time-s", "1", wait_ports=(port,)
    )
    for _ in range(20):
        assert _get_new_connection(port)[1]["upstream"] == "A"

    version = xds.set_resources(api.ROUTE, [routes("main", ("/", "b"))])
    _wait_acked(xds, api.ROUTE, version)
    # ACKed: every worker already routes to B, so no new connection may still reach A.
    seen = [_get_new_connection(port)[1]["upstream"] for _ in range(40)]
    assert seen == ["B"] * 40
    workers = _admin(proxy, "/workers")["workers"]
    assert all(w["downstream_rq_total"] > 0 for w in workers), workers

    # A NACKed change reaches no worker: traffic stays on B everywhere.
    bad = routes("main", ("/", "b"))
    bad.virtual_hosts[0].routes[0].match.safe_regex.regex = "("
    bad_version = xds.set_resources(api.ROUTE, [bad])
    xds.wait_for_request(lambda r: r.type_url == api.ROUTE and r.is_nack, timeout=20)
    assert bad_version != version
    assert [_get_new_connection(port)[1]["upstream"] for _ in range(10)] == ["B"] * 10

    # LDS: a listener on a new address is bound by every worker (and reserved by the main) before
    # the ACK; removing it closes it in every worker.
    second = free_port()
    version = xds.set_resources(
        api.LISTENER,
        [xds_http_listener("ingress", port, "main"), xds_http_listener("second", second, "main")],
    )
    _wait_acked(xds, api.LISTENER, version)
    before = {w["index"]: w["downstream_cx_total"] for w in _admin(proxy, "/workers")["workers"]}
    assert [_get_new_connection(second)[0] for _ in range(40)] == [200] * 40
    after = {w["index"]: w["downstream_cx_total"] for w in _admin(proxy, "/workers")["workers"]}
    assert all(after[i] > before[i] for i in before), (before, after)
    version = xds.set_resources(api.LISTENER, [xds_http_listener("ingress", port, "main")])
    _wait_acked(xds, api.LISTENER, version)
    wait_until(lambda: all(_connect_refused(second) for _ in range(20)), timeout=10)


def test_killed_worker_is_restarted_with_the_current_config(procs, xds):
    a, b = start_upstream(procs, "A"), start_upstream(procs, "B")
    port = free_port()
    xds.set_resources(api.CLUSTER, [static("a", a), static("b", b)])
    xds.set_resources(api.LISTENER, [xds_http_listener("ingress", port, "main")])
    xds.set_resources(api.ROUTE, [routes("main", ("/", "a"))])
    proxy = start_proxy(
        procs, xds_bootstrap(xds.port), "--concurrency", "2", "--drain-time-s", "1", wait_ports=(port,)
    )
    version = xds.set_resources(api.ROUTE, [routes("main", ("/", "b"))])
    _wait_acked(xds, api.ROUTE, version)

    victim = _admin(proxy, "/workers")["workers"][0]
    os.kill(victim["pid"], signal.SIGKILL)
    wait_until(lambda: not _alive(victim["pid"]), timeout=10)

    def restarted():
        w = _admin(proxy, "/workers")["workers"][0]
        return w["ready"] and w["pid"] != victim["pid"] and w["restarts"] == 1

    wait_until(restarted, timeout=30)
    wait_until(lambda: urllib.request.urlopen(proxy.admin + "/ready", timeout=5).status == 200, timeout=10)
    assert _counter(proxy, "server.worker_restarts") == 1
    # The new worker got the config as it is now (route to B), not the bootstrap-time one.
    seen = [_get_new_connection(port)[1]["upstream"] for _ in range(40)]
    assert seen == ["B"] * 40
    new_pid = _admin(proxy, "/workers")["workers"][0]["pid"]
    assert _admin(proxy, "/workers")["workers"][0]["downstream_rq_total"] > 0, new_pid


def test_sigterm_stops_main_and_workers(procs):
    up = start_upstream(procs, "A")
    proxy, port = _static_proxy(procs, up)
    pids = [w["pid"] for w in _admin(proxy, "/workers")["workers"]]
    assert _get_new_connection(port)[0] == 200
    proxy.proc.send_signal(signal.SIGTERM)
    assert proxy.proc.wait(30) == 0
    wait_until(lambda: not any(_alive(p) for p in pids), timeout=10)


def test_workers_die_with_a_killed_main(procs):
    up = start_upstream(procs, "A")
    proxy, port = _static_proxy(procs, up)
    pids = [w["pid"] for w in _admin(proxy, "/workers")["workers"]]
    proxy.proc.kill()
    proxy.proc.wait(10)
    wait_until(lambda: not any(_alive(p) for p in pids), timeout=10)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            _get_new_connection(port)
        except OSError:
            return
        time.sleep(0.05)
    raise AssertionError("the listener still answers after every process is gone")


def test_changes_under_load_lose_nothing_in_any_worker(procs, xds):
    """Routes, endpoints and the listener's filter chain change under keep-alive load spread over two
    workers: every request is answered, the upstreams saw exactly the answered requests, and admin's
    summed counter agrees."""
    from tests.integration.proxy.test_xds_no_loss import LoadGenerator, upstream_received
    from tests.integration.proxy.xds_support import FAULT, ROUTER, cla, eds_cluster

    ups = {name: start_upstream(procs, name) for name in ("A", "B", "C")}
    port = free_port()
    xds.set_resources(api.CLUSTER, [static("a", ups["A"]), eds_cluster("svc")])
    xds.set_resources(api.ENDPOINT, [cla("svc", ups["B"])])
    xds.set_resources(api.ROUTE, [routes("main", ("/w", {"a": 50, "svc": 50}), ("/", "a"))])
    xds.set_resources(api.LISTENER, [xds_http_listener("ingress", port, "main")])
    proxy = start_proxy(
        procs, xds_bootstrap(xds.port), "--concurrency", "2", "--drain-time-s", "3", wait_ports=(port,)
    )
    warmup = sum(upstream_received(p) for p in ups.values())

    load = LoadGenerator(port)
    load.start()
    changes = 12
    for i in range(changes):
        kind = i % 3
        if kind == 0:
            target = "svc" if (i // 3) % 2 == 0 else "a"
            xds.set_resources(api.ROUTE, [routes("main", ("/w", {"a": 50, "svc": 50}), ("/", target))])
        elif kind == 1:
            endpoints = [[ups["B"]], [ups["C"]], [ups["B"], ups["C"]], [ups["A"], ups["C"]]][(i // 3) % 4]
            xds.set_resources(api.ENDPOINT, [cla("svc", *endpoints)])
        else:
            filters = [FAULT, ROUTER] if (i // 3) % 2 == 0 else [ROUTER]
            version = xds.set_resources(
                api.LISTENER, [xds_http_listener("ingress", port, "main", http_filters=filters)]
            )
            xds.wait_for_request(
                lambda r, v=version: r.type_url == api.LISTENER and r.version_info == v, timeout=30
            )
        time.sleep(0.5)
    load.join()

    assert not xds.nacks(api.LISTENER) and not xds.nacks(api.ROUTE) and not xds.nacks(api.ENDPOINT)
    answered = sum(load.ok_by_upstream.values())
    assert load.failures == [], f"{len(load.failures)} failed requests, e.g. {load.failures[:5]}"
    assert answered == load.sent and answered > 0
    received = sum(upstream_received(p) for p in ups.values()) - warmup - len(ups)
    assert received == answered, f"upstreams received {received}, clients got {answered} answers"
    assert _counter(proxy, "http.ingress.downstream_rq_total") == answered
    workers = _admin(proxy, "/workers")["workers"]
    assert all(w["downstream_rq_total"] > 0 for w in workers), workers


def test_mtls_sidecars_with_two_workers_each_get_sds_secrets_from_the_main(procs, tmp_path, monkeypatch):
    """The mTLS pair of test_mtls_sidecars (real citadel, real agents, SDS on their Unix sockets) with
    both sidecars at --concurrency 2: only the main process talks SDS, and every worker of both
    sidecars serves TLS with the certificates it forwarded."""
    from tests.integration.citadel.harness import start_citadel
    from tests.integration.proxy import mtls_support

    monkeypatch.setattr(
        mtls_support,
        "start_proxy",
        lambda procs, bootstrap, *args, **kw: start_proxy(
            procs, bootstrap, "--concurrency", "2", "--drain-time-s", "1", *args, **kw
        ),
    )
    citadel = start_citadel(procs, tmp_path / "ca")
    app_port = start_upstream(procs, "reviews")
    # One request per upstream connection: the client's workers open new mTLS connections, which the
    # server sidecar's kernel spreads over its workers (a reused pool could land on one of them).
    mesh = mtls_support.start_mesh(
        procs, tmp_path, citadel, app_port, cluster_extra={"max_requests_per_connection": 1}
    )
    for _ in range(30):
        conn = http.client.HTTPConnection("127.0.0.1", mesh.outbound_port, timeout=10)
        conn.request("GET", "/reviews/1", headers={"connection": "close"})
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        assert resp.status == 200, body
        xfcc = json.loads(body)["headers"]["x-forwarded-client-cert"]
        assert f"URI={mtls_support.spiffe(mtls_support.CLIENT_SA)}" in xfcc
    for proxy in (mesh.client, mesh.server):
        assert set(mtls_support.dynamic_secrets(proxy)) >= {"default", "ROOTCA"}
        workers = _admin(proxy, "/workers")["workers"]
        assert all(w["downstream_rq_total"] > 0 for w in workers), workers
    assert _counter(mesh.server, f"listener.127.0.0.1_{mesh.strict_port}.ssl.handshake") >= 2
    # A plaintext client still cannot reach the STRICT port in any worker.
    for _ in range(10):
        with contextlib.suppress(OSError, http.client.HTTPException):
            status, _ = _get_new_connection(mesh.strict_port)
            assert status != 200


def test_a_static_listener_on_port_0_is_one_port_shared_by_every_worker(procs):
    up = start_upstream(procs, "A")
    bootstrap = {
        "static_resources": {
            "listeners": [http_listener(0, _route("app"))],
            "clusters": [static_cluster("app", [up])],
        }
    }
    proxy = start_proxy(procs, bootstrap, "--concurrency", "2", "--drain-time-s", "1")
    [line] = _admin(proxy, "/listeners").splitlines()
    port = int(line.rsplit(":", 1)[1])
    assert port != 0
    assert [_get_new_connection(port)[0] for _ in range(40)] == [200] * 40
    workers = _admin(proxy, "/workers")["workers"]
    assert all(w["downstream_rq_total"] > 0 for w in workers), workers
