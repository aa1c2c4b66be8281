"""The Docker registry through the real ``docker`` package, against recorded Engine API responses.

No Docker engine runs on our build machines, so a small local HTTP server replays a recorded
``GET /containers/json`` answer; the registry talks to it with a real ``docker.APIClient``."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import docker
import pytest
import requests

from pilot.serviceregistry.docker import DockerRegistry

RECORDED = json.loads((Path(__file__).parent / "recorded" / "containers.json").read_text())


@pytest.fixture
def engine():
    """A fake engine: serves ``state["containers"]`` and records the queries it got."""
    state = {"containers": RECORDED, "queries": []}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            url = urlparse(self.path)
            if not url.path.endswith("/containers/json"):
                self.send_error(404)
                return
            state["queries"].append(parse_qs(url.query))
            body = json.dumps(state["containers"]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    client = docker.APIClient(base_url=f"tcp://127.0.0.1:{server.server_address[1]}", version="1.43")
    try:
        yield client, state
    finally:
        client.close()
        server.shutdown()
        server.server_close()
        thread.join()


def test_containers_become_services_and_endpoints(engine):
    client, state = engine
    reg = DockerRegistry(client)
    changes = []
    reg.on_change(lambda: changes.append(1))
    assert reg.refresh() is True
    assert json.loads(state["queries"][0]["filters"][0]) == {"label": ["isthmus.io/service"]}
    hosts = {s.hostname: s for s in reg.services()}
    assert set(hosts) == {"reviews.default.svc.cluster.local", "ratings.bookinfo.svc.cluster.local"}
    assert hosts["reviews.default.svc.cluster.local"].ports[0].protocol == "HTTP"
    # Without isthmus.io/ports, exposed TCP ports are used (UDP is not).
    assert [(p.name, p.number, p.protocol) for p in hosts["ratings.bookinfo.svc.cluster.local"].ports] == [
        ("tcp-9080", 9080, "TCP")
    ]
    (ep,) = [e for e in reg.endpoints() if e.service.startswith("reviews")]
    assert (ep.address, ep.port, ep.labels["version"], ep.service_account) == (
        "172.18.0.5",
        9080,
        "v2",
        "bookinfo-reviews",
    )
    assert "isthmus.io/service" not in ep.labels
    # A container with a bad label is skipped and said so, not silently dropped.
    assert any("bookinfo-details-1" in p and "isthmus.io/ports" in p for p in reg.problems)
    assert changes == [1]
    # Same answer again: no change notification.
    assert reg.refresh() is False


def test_stopped_container_leaves_the_registry(engine):
    client, state = engine
    reg = DockerRegistry(client)
    reg.refresh()
    state["containers"] = [c for c in RECORDED if "reviews" not in c["Names"][0]]
    assert reg.refresh() is True
    assert "reviews.default.svc.cluster.local" not in {s.hostname for s in reg.services()}


def test_engine_error_keeps_last_state(engine):
    client, _ = engine
    reg = DockerRegistry(client)
    reg.refresh()
    before = reg.services()
    bad = DockerRegistry(docker.APIClient(base_url="tcp://127.0.0.1:1", version="1.43", timeout=2))
    with pytest.raises((docker.errors.DockerException, requests.exceptions.ConnectionError)):
        bad.refresh()
    assert bad.services() == ()
    assert reg.services() == before
