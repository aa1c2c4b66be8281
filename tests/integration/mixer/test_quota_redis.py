"""ShouldRateLimit against a REAL redis-server started by the test: the limit, two replicas sharing it,
and Redis dying and coming back while mixer keeps serving."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from envoy.service.ratelimit.v3 import rls_pb2

from tests.integration.mixer.harness import (
    rl_request,
    sleep_to_window_start,
    start_mixer,
    start_redis,
    wait_until,
)

OK = rls_pb2.RateLimitResponse.OK
OVER = rls_pb2.RateLimitResponse.OVER_LIMIT

CONFIG = """
quota:
  failureMode: {mode}
  domains:
  - domain: productpage-ratelimit
    descriptors:
    - key: PATH
      value: /productpage
      rate_limit: {{unit: second, requests_per_unit: {limit}}}
    - key: remote_address
      rate_limit: {{unit: minute, requests_per_unit: 1000}}
"""
PRODUCTPAGE = [("PATH", "/productpage")]


def test_ten_per_second_gives_over_limit_to_the_excess(procs, tmp_path):
    _, port = start_redis(procs)
    mixer = start_mixer(procs, tmp_path, CONFIG.format(mode="open", limit=10), f"redis://127.0.0.1:{port}/0")
    stub = mixer.ratelimit()
    stub.ShouldRateLimit(rl_request("other-domain", PRODUCTPAGE), timeout=5)  # warm the channel
    sleep_to_window_start()
    codes = [
        stub.ShouldRateLimit(rl_request("productpage-ratelimit", PRODUCTPAGE), timeout=2) for _ in range(15)
    ]
    assert [r.overall_code for r in codes] == [OK] * 10 + [OVER] * 5
    last = codes[-1].statuses[0]
    assert last.current_limit.requests_per_unit == 10 and last.limit_remaining == 0
    assert 0 < last.duration_until_reset.ToMilliseconds() <= 1000
    # a descriptor the config does not limit passes, and unknown domains are never limited
    other = stub.ShouldRateLimit(rl_request("productpage-ratelimit", [("PATH", "/other")]), timeout=2)
    assert other.overall_code == OK and not other.statuses[0].HasField("current_limit")
    events = json.loads(mixer.get("/api/ratelimits"))
    assert events["total"] == 5 and events["events"][0]["descriptor"] == "PATH=/productpage"
    usage = json.loads(mixer.get("/api/quota"))
    assert usage["backend"] == "redis"
    assert usage["usage"][0]["limit"] == 10


def test_two_replicas_sharing_redis_hold_the_limit_globally(procs, tmp_path):
    _, port = start_redis(procs)
    url = f"redis://127.0.0.1:{port}/0"
    config = CONFIG.format(mode="open", limit=10)
    replicas = [start_mixer(procs, tmp_path, config, url, name=f"mixer{i}") for i in range(2)]
    stubs = [m.ratelimit() for m in replicas]
    for s in stubs:
        s.ShouldRateLimit(rl_request("warm", PRODUCTPAGE), timeout=5)

    windows = 3
    start = sleep_to_window_start()
    end = start + windows - 0.05  # stay inside the last whole window

    def client(stub) -> list[int]:
        codes = []
        while time.time() < end:
            codes.append(
                stub.ShouldRateLimit(rl_request("productpage-ratelimit", PRODUCTPAGE), timeout=2).overall_code
            )
            time.sleep(0.02)
        return codes

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(client, stubs * 2))
    codes = [c for r in results for c in r]
    allowed = codes.count(OK)
    assert len(codes) > 3 * windows * 10, "not enough traffic to exceed the limit in every window"
    expected = windows * 10
    assert abs(allowed - expected) <= expected * 0.10, (allowed, len(codes))
    # both replicas admitted some of it: the limit is shared, not per replica
    assert all(OK in r for r in results)


@pytest.mark.parametrize("mode", ["open", "closed"])
def test_losing_redis_applies_failure_mode_and_recovers(procs, tmp_path, mode):
    redis, port = start_redis(procs)
    # open: a zero limit makes "allowed" only possible through the failure mode;
    # closed: a generous limit makes "over limit" only possible through the failure mode
    limit = 0 if mode == "open" else 100000
    mixer = start_mixer(procs, tmp_path, CONFIG.format(mode=mode, limit=limit), f"redis://127.0.0.1:{port}/0")
    stub = mixer.ratelimit()
    normal, failed = (OVER, OK) if mode == "open" else (OK, OVER)

    def ask():
        return stub.ShouldRateLimit(rl_request("productpage-ratelimit", PRODUCTPAGE), timeout=2).overall_code

    assert ask() == normal
    procs.stop(redis)
    started = time.monotonic()
    assert [ask() for _ in range(5)] == [failed] * 5
    assert time.monotonic() - started < 3, "calls must fail fast while Redis is down"
    assert mixer.get("/ready") == b"ready\n" and mixer.proc.poll() is None
    assert mixer.metric_sum("mixer_quota_backend_errors_total", backend="redis", failure_mode=mode) >= 5
    assert mixer.metric_sum("mixer_quota_backend_up", backend="redis") == 0

    start_redis(procs, port)  # back on the same port
    wait_until(lambda: ask() == normal, timeout=10, what="recovery after Redis returned")
    assert mixer.metric_sum("mixer_quota_backend_up", backend="redis") == 1
    out = procs.output(mixer.proc)
    assert "event=quota.backend_unavailable" in out and f"failure_mode={mode}" in out
    assert "event=quota.backend_recovered" in out
