"""The agent's start order: the proxy waits for the first certificate, at most --cert-wait, and not at all
once the agent is told to stop; the bootstrap file is written whole."""

from __future__ import annotations

import asyncio
import json
import time

from proxy.agent import app
from proxy.agent.bootstrap import BootstrapOptions


class FakeCerts:
    def __init__(self) -> None:
        self.state = None
        self.arrived = asyncio.Event()

    async def wait_newer(self, version: int):
        await self.arrived.wait()
        return self.state


async def test_proxy_start_waits_for_the_first_certificate():
    certs, stop = FakeCerts(), asyncio.Event()
    waiting = asyncio.create_task(app._first_certificate(certs, 30, stop))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    certs.arrived.set()
    await asyncio.wait_for(waiting, 1)


async def test_without_a_certificate_the_proxy_starts_after_the_timeout(caplog):
    t0 = time.monotonic()
    await asyncio.wait_for(app._first_certificate(FakeCerts(), 0.1, asyncio.Event()), 2)
    assert time.monotonic() - t0 >= 0.1
    assert "proxy.cert_wait_timeout" in caplog.text


async def test_a_stop_ends_the_wait():
    stop = asyncio.Event()
    waiting = asyncio.create_task(app._first_certificate(FakeCerts(), 30, stop))
    stop.set()
    await asyncio.wait_for(waiting, 1)


def test_write_bootstrap(tmp_path):
    config = app.ProxyConfig(
        BootstrapOptions(name="details-v1", ip="127.0.0.11"), tmp_path / "p" / "envoy-rev.json"
    )
    data = app.write_bootstrap(config)
    assert json.loads(config.bootstrap_path.read_text()) == data
    assert data["node"]["id"].startswith("sidecar~127.0.0.11~details-v1.default~")
    assert [p.name for p in config.bootstrap_path.parent.iterdir()] == ["envoy-rev.json"]
