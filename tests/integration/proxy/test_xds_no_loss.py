"""No request lost on change: under continuous keep-alive load through a real proxy, the test control
plane changes the configuration 40 times (routes, weights, endpoints, the listener's filter chain).
Every request must succeed, and the upstreams must have received exactly as many requests as the
clients got answers (none lost, none duplicated)."""

from __future__ import annotations

import http.client
import json
import threading
import time

from proxy.xds import api
from tests.integration.proxy.harness import start_upstream
from tests.integration.proxy.xds_support import (
    FAULT,
    ROUTER,
    cla,
    eds_cluster,
    http_listener,
    routes,
    start_xds_proxy,
    stat,
    static,
    upstream_of,
    wait_until,
)
from tests.support.net import free_port

DURATION_S = 20.0
TARGET_RPS = 260
THREADS = 8
CHANGES = 40


class LoadGenerator:
    """THREADS keep-alive HTTP/1.1 clients, paced to TARGET_RPS in total, counting every outcome."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.ok_by_upstream: dict[str, int] = {}
        self.failures: list[str] = []
        self.sent = 0
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(THREADS)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def _run(self, index: int) -> None:
        interval = THREADS / TARGET_RPS
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        next_at = time.monotonic()
        n = 0
        while not self.stop.is_set():
            path = "/w" if n % 2 else "/"
            n += 1
            with self.lock:
                self.sent += 1
            try:
                conn.request("GET", f"{path}?t={index}-{n}")
                resp = conn.getresponse()
                body = resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"status {resp.status}: {body[:200]!r}")
                upstream = json.loads(body)["upstream"]
                with self.lock:
                    self.ok_by_upstream[upstream] = self.ok_by_upstream.get(upstream, 0) + 1
                if resp.will_close:
                    conn.close()  # Connection: close from a draining listener; reconnect next time
            except Exception as e:  # noqa: BLE001 - every failure is counted and reported
                with self.lock:
                    self.failures.append(f"{path}: {type(e).__name__}: {e}")
                conn.close()
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        conn.close()


def upstream_received(port: int) -> int:
    """How many requests an upstream has received (its own counter, minus this question)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/count")
        return json.loads(conn.getresponse().read())["count"] - 1
    finally:
        conn.close()


def test_forty_changes_under_load_lose_and_duplicate_nothing(procs, xds):
    ups = {name: start_upstream(procs, name) for name in ("A", "B", "C")}
    port = free_port()
    xds.set_resources(api.CLUSTER, [static("a", ups["A"]), eds_cluster("svc")])
    xds.set_resources(api.ENDPOINT, [cla("svc", ups["B"])])
    xds.set_resources(api.ROUTE, [routes("main", ("/w", {"a": 50, "svc": 50}), ("/", "a"))])
    xds.set_resources(api.LISTENER, [http_listener("ingress", port, "main")])
    proxy = start_xds_proxy(procs, xds.port, port, drain_s=3)
    assert upstream_of(port) == "A"
    warmup = sum(upstream_received(p) for p in ups.values())  # the readiness request above

    load = LoadGenerator(port)
    started = time.monotonic()
    load.start()
    kinds = ["route", "weight", "endpoint", "listener"]
    for i in range(CHANGES):
        kind = kinds[i % 4]
        if kind == "route":
            target = "svc" if (i // 4) % 2 == 0 else "a"
            xds.set_resources(api.ROUTE, [routes("main", ("/w", {"a": 50, "svc": 50}), ("/", target))])
        elif kind == "weight":
            w = 10 + (i * 7) % 80
            target = "svc" if (i // 4) % 2 == 0 else "a"
            xds.set_resources(api.ROUTE, [routes("main", ("/w", {"a": w, "svc": 100 - w}), ("/", target))])
        elif kind == "endpoint":
            endpoints = [[ups["B"]], [ups["C"]], [ups["B"], ups["C"]], [ups["A"], ups["C"]]][(i // 4) % 4]
            xds.set_resources(api.ENDPOINT, [cla("svc", *endpoints)])
        else:
            filters = [FAULT, ROUTER] if (i // 4) % 2 == 0 else [ROUTER]
            xds.set_resources(api.LISTENER, [http_listener("ingress", port, "main", http_filters=filters)])
        time.sleep(max(0.0, started + (i + 1) * DURATION_S / CHANGES - time.monotonic()))
    load.join()
    elapsed = time.monotonic() - started

    # Every change was applied (ACKed, nothing NACKed).
    assert not xds.nacks(api.LISTENER) and not xds.nacks(api.ROUTE) and not xds.nacks(api.ENDPOINT)
    wait_until(lambda: stat(proxy, "listener_manager.lds.update_success") >= 1 + CHANGES // 4)
    assert stat(proxy, "http.ingress.rds.main.update_success") >= 1 + CHANGES // 2
    assert stat(proxy, "cluster.svc.update_success") >= 1 + CHANGES // 4
    assert stat(proxy, "listener_manager.listener_modified") >= CHANGES // 4

    answered = sum(load.ok_by_upstream.values())
    assert load.failures == [], f"{len(load.failures)} failed requests, e.g. {load.failures[:5]}"
    assert answered == load.sent
    assert answered / elapsed >= 200, f"only {answered / elapsed:.0f} requests/s"
    assert len(load.ok_by_upstream) == 3  # the changes really moved traffic between A, B and C
    # Minus what arrived before the load, and minus the warm-up /count questions themselves.
    received = sum(upstream_received(p) for p in ups.values()) - warmup - len(ups)
    assert received == answered, f"upstreams received {received}, clients got {answered} answers"
