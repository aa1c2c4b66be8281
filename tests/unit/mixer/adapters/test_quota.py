import asyncio

from mixer.adapters.quota import (
    BackendError,
    MemoryBackend,
    QuotaService,
    counter_key,
    match_limits,
    window_start,
)
from mixer.config.model import parse

CONFIG = parse(
    """
quota:
  domains:
  - domain: edge
    descriptors:
    - key: remote_address
      rate_limit: {unit: second, requests_per_unit: 2}
    - key: PATH
      value: /productpage
      rate_limit: {unit: minute, requests_per_unit: 3}
      descriptors:
      - key: user
        value: jason
        shadow_mode: true
        rate_limit: {unit: minute, requests_per_unit: 1}
    - key: PATH
      value: /free
      rate_limit: {unlimited: true}
    - key: PATH
      descriptors:
      - key: method
        value: GET
        rate_limit: {unit: hour, requests_per_unit: 1}
"""
).quota


class FakeClock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def run(coro):
    return asyncio.run(coro)


def test_descriptor_matching_like_envoyproxy_ratelimit():
    m = match_limits(
        CONFIG,
        "edge",
        [
            [("remote_address", "1.2.3.4")],  # key without value matches any value
            [("PATH", "/productpage")],  # exact value
            [("PATH", "/productpage"), ("user", "jason")],  # nested
            [("PATH", "/other")],  # key-only node without a limit of its own
            [("PATH", "/other"), ("method", "GET")],  # through the key-only node
            [("unknown", "x")],
            [],
        ],
    )
    assert m[0].limit.requests_per_unit == 2
    assert m[1].limit.unit == "minute" and not m[1].shadow
    assert m[2].limit.requests_per_unit == 1 and m[2].shadow
    assert m[3] is None and m[5] is None and m[6] is None
    assert m[4].limit.unit == "hour"
    assert match_limits(CONFIG, "no-such-domain", [[("PATH", "/productpage")]]) == [None]


def test_key_design_and_windows():
    assert window_start(125.9, 60) == 120 and window_start(125.9, 1) == 125
    assert counter_key("d", (("k1", "v1"), ("k2", "v2")), 120) == "ratelimit:d_k1_v1_k2_v2_120"


def test_fixed_window_counts_reset_at_window_boundary():
    clock = FakeClock(1000.2)
    svc = QuotaService(MemoryBackend(clock), clock)
    ask = lambda: run(svc.should_rate_limit(CONFIG, "edge", [[("remote_address", "a")]]))  # noqa: E731
    codes = [ask().overall for _ in range(3)]
    assert codes == ["OK", "OK", "OVER_LIMIT"]
    r = ask()
    assert r.statuses[0].remaining == 0 and abs(r.statuses[0].reset_s - 0.8) < 1e-9
    clock.t = 1000.99
    assert ask().overall == "OVER_LIMIT"
    clock.t = 1001.0  # the next window
    assert ask().overall == "OK"
    # another remote address has its own counter
    assert run(svc.should_rate_limit(CONFIG, "edge", [[("remote_address", "b")]])).overall == "OK"


def test_hits_addend_shadow_and_unlimited():
    clock = FakeClock(0.0)
    svc = QuotaService(MemoryBackend(clock), clock)
    r = run(svc.should_rate_limit(CONFIG, "edge", [[("PATH", "/productpage")]], hits_addend=3))
    assert r.overall == "OK" and r.statuses[0].used == 3
    assert run(svc.should_rate_limit(CONFIG, "edge", [[("PATH", "/productpage")]])).overall == "OVER_LIMIT"
    shadow = [[("PATH", "/productpage"), ("user", "jason")]]
    run(svc.should_rate_limit(CONFIG, "edge", shadow))
    r = run(svc.should_rate_limit(CONFIG, "edge", shadow))
    assert r.overall == "OK" and r.statuses[0].shadow_over
    for _ in range(100):
        assert run(svc.should_rate_limit(CONFIG, "edge", [[("PATH", "/free")]])).overall == "OK"


def test_overall_is_over_when_any_descriptor_is_over():
    clock = FakeClock(0.0)
    svc = QuotaService(MemoryBackend(clock), clock)
    both = [[("remote_address", "x")], [("PATH", "/other")]]
    for _ in range(2):
        run(svc.should_rate_limit(CONFIG, "edge", both))
    r = run(svc.should_rate_limit(CONFIG, "edge", both))
    assert r.overall == "OVER_LIMIT" and [s.code for s in r.statuses] == ["OVER_LIMIT", "OK"]


class BrokenBackend:
    name = "broken"

    async def increment(self, items, hits):
        raise BackendError("connection refused")


def test_backend_failure_applies_failure_mode():
    for mode, expected in (("open", "OK"), ("closed", "OVER_LIMIT")):
        quota = parse(
            f"quota: {{failureMode: {mode}, domains: [{{domain: d, descriptors: [{{key: k, rate_limit: "
            "{unit: second, requests_per_unit: 5}}]}]}"
        ).quota
        r = run(QuotaService(BrokenBackend()).should_rate_limit(quota, "d", [[("k", "v")], [("z", "z")]]))
        assert r.overall == expected and r.backend_error == "connection refused"
        assert r.statuses[1].code == "OK"  # not limited: the failure mode does not apply


def test_memory_backend_forgets_expired_windows():
    clock = FakeClock(0.0)
    backend = MemoryBackend(clock)
    run(backend.increment([("a", 1)], 1))
    clock.t = 5.0
    run(backend.increment([("b", 1)], 1))
    assert set(backend.counters) == {"b"}
