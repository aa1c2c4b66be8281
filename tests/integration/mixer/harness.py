"""Start real mixer and redis-server processes for mixer's integration tests."""

from __future__ import annotations

import shutil
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from envoy.service.accesslog.v3 import als_pb2_grpc
from envoy.service.auth.v3 import external_auth_pb2_grpc
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from tests.support.net import free_port, wait_for_http, wait_for_port

REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"


@dataclass
class Mixer:
    proc: object
    grpc_port: int
    http_port: int
    config: Path | None
    channel: grpc.Channel

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def authz(self):
        return external_auth_pb2_grpc.AuthorizationStub(self.channel)

    def ratelimit(self):
        return rls_pb2_grpc.RateLimitServiceStub(self.channel)

    def accesslog(self):
        return als_pb2_grpc.AccessLogServiceStub(self.channel)

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.http + path, timeout=5) as resp:
            return resp.read()

    def metrics(self) -> dict:
        """{(name, frozenset(labels.items())): value} for every sample of /metrics (parsed strictly)."""
        text = self.get("/metrics").decode()
        out = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out[(s.name, frozenset(s.labels.items()))] = s.value
        return out

    def metric_sum(self, name: str, **labels) -> float:
        want = set(labels.items())
        return sum(v for (n, lab), v in self.metrics().items() if n == name and want <= lab)


def start_mixer(
    procs, tmp_path: Path, config_text: str | None = None, redis_url: str | None = None, name="mixer"
):
    grpc_port, http_port = free_port(), free_port()
    args = ["-m", "mixer", "--grpc-addr", f"127.0.0.1:{grpc_port}", "--http-addr", f"127.0.0.1:{http_port}"]
    config = None
    if config_text is not None:
        config = tmp_path / f"{name}.yaml"
        config.write_text(config_text)
        args += ["--config", str(config)]
    if redis_url:
        args += ["--redis-url", redis_url]
    proc = procs.python(*args)
    wait_for_http(f"http://127.0.0.1:{http_port}/ready", proc=proc)
    wait_for_port("127.0.0.1", grpc_port, proc=proc)
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    return Mixer(proc, grpc_port, http_port, config, channel)


def start_redis(procs, port: int | None = None):
    if not Path(REDIS).exists():
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    port = port or free_port()
    proc = procs.start(
        [REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    )
    wait_for_port("127.0.0.1", port, proc=proc)
    return proc, port


def rl_request(domain: str, *descriptors: list[tuple[str, str]]) -> rls_pb2.RateLimitRequest:
    from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2

    req = rls_pb2.RateLimitRequest(domain=domain, hits_addend=1)
    for entries in descriptors:
        d = ratelimit_pb2.RateLimitDescriptor()
        for k, v in entries:
            d.entries.add(key=k, value=v)
        req.descriptors.append(d)
    return req


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout}s")
        time.sleep(interval)


def sleep_to_window_start(offset: float = 0.05) -> float:
    """Wait until just after the next whole second (a 1-second quota window starts); return that second."""
    now = time.time()
    start = int(now) + 1
    time.sleep(start + offset - now)
    return start
