"""Security end to end through pilot: real citadel, pilot, agents with their sidecars, and a real app.

"sleep" (namespace foo, SA sleep) and "other" (namespace baz, SA other) call "httpbin" (namespace bar)
through their sidecars' HTTP_PROXY listeners (local mode). The server sidecar sits in front of the app
(see mesh.py). Policies go in with `isthmus apply -f`; each change is awaited by polling its effect.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from tests.integration.security.mesh import (
    SecurityMesh,
    install_capture,
    remove_capture,
    via_sidecar,
)
from tests.support.processes import ProcessGroup

pytestmark = pytest.mark.netns  # root with iptables: the nat rule in front of the server's app

PORT = 8000
HOST = "httpbin.bar.svc.cluster.local"
SERVER_IP, SLEEP_IP, OTHER_IP = "127.0.0.161", "127.0.0.162", "127.0.0.163"
DENIED = b"RBAC: access denied"


def peer_auth(mode: str) -> str:
    return f"""\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: httpbin, namespace: bar}}
spec:
  selector: {{matchLabels: {{app: httpbin}}}}
  mtls: {{mode: {mode}}}
"""


def authz(name: str, action: str, rules: str) -> str:
    return f"""\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: {name}, namespace: bar}}
spec:
  selector: {{matchLabels: {{app: httpbin}}}}
  action: {action}
  rules:
{rules}"""


@pytest.fixture(scope="module")
def mesh():
    procs = ProcessGroup()
    # the server's agent runs as the proxy UID: its files live where that UID can reach them
    tmp = Path(tempfile.mkdtemp(prefix="isthmus-sec-e2e-"))
    try:
        m = SecurityMesh(procs, tmp)
        m.start_app(SERVER_IP, PORT, "httpbin")
        install_capture(SERVER_IP, PORT)
        server = m.start_sidecar("httpbin", SERVER_IP, "bar", "httpbin", service="httpbin", port=PORT)
        sleep = m.start_sidecar("sleep", SLEEP_IP, "foo", "sleep")
        other = m.start_sidecar("other", OTHER_IP, "baz", "other")
        for w in (server, sleep, other):
            m.wait_ready(w)
        yield m
    finally:
        procs.stop_all()
        remove_capture()
        shutil.rmtree(tmp, ignore_errors=True)


def call(mesh, client: str, path: str = "/ip", headers: dict | None = None):
    return via_sidecar(mesh.workloads[client], HOST, PORT, path, headers)


def eventually(fn, what: str, timeout: float = 15):
    """Poll until fn() is truthy (pilot pushes within ~1 s; the proxies apply at once)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"{what}: not observed within {timeout}s (last: {last!r})")


def status_is(mesh, client, path, code, headers=None):
    def check():
        status, body = call(mesh, client, path, headers)
        return (status, body) if status == code else None

    return check


def test_sidecars_speak_mutual_tls_by_default_and_the_app_sees_the_callers_spiffe_id(mesh):
    status, body = eventually(status_is(mesh, "sleep", "/ip", 200), "sleep -> httpbin through both sidecars")
    seen = json.loads(body)
    assert seen["upstream"] == "httpbin"
    xfcc = seen["headers"].get("x-forwarded-client-cert", "")
    assert "URI=spiffe://cluster.local/ns/foo/sa/sleep" in xfcc, seen["headers"]
    assert "By=spiffe://cluster.local/ns/bar/sa/httpbin" in xfcc and "Hash=" in xfcc
    # and the other client's identity is its own
    status, body = eventually(status_is(mesh, "other", "/ip", 200), "other -> httpbin")
    assert (
        "URI=spiffe://cluster.local/ns/baz/sa/other" in json.loads(body)["headers"]["x-forwarded-client-cert"]
    )
