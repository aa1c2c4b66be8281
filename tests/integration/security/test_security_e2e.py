"""Security end to end through pilot: real citadel, pilot, agents with their sidecars, and a real app.

"sleep" (namespace foo, SA sleep) and "other" (namespace baz, SA other) call "httpbin" (namespace bar)
through their sidecars' HTTP_PROXY listeners (local mode). The server sidecar sits in front of the app
(see mesh.py). Policies go in with `isthmus apply -f`; each change is awaited by polling its effect.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.integration.citadel.harness import create, csr_for
from tests.integration.security.mesh import (
    SecurityMesh,
    install_capture,
    raw_http,
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
        remove_capture()  # whatever an earlier, killed run left behind
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


# -- PeerAuthentication ----------------------------------------------------------------------------------


def plaintext(path: str = "/plain") -> tuple[int, bytes] | None:
    """A client without a sidecar, straight to the server's port (its sidecar answers): None = refused."""
    try:
        reply = raw_http(
            SERVER_IP,
            PORT,
            f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode(),
            timeout=5,
        )
        return reply if reply[0] else None  # closed without an HTTP response
    except (OSError, ValueError, IndexError):
        return None


def openssl_client(mesh, *cert_args: str) -> subprocess.CompletedProcess:
    root = mesh.tmp / "sleep" / "root-cert.pem"
    return subprocess.run(
        ["openssl", "s_client", "-connect", f"{SERVER_IP}:{PORT}", "-CAfile", str(root), "-quiet",
         "-verify_return_error", *cert_args],
        input=f"GET /tls HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n",
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip


def client_cert(mesh) -> tuple[str, ...]:
    """A workload certificate from citadel (bootstrap token, CSR) for a client without a sidecar."""
    d = mesh.tmp / "tester"
    if not (d / "cert.pem").exists():
        d.mkdir(exist_ok=True)
        csr, key_pem = csr_for("spiffe://cluster.local/ns/qux/sa/tester")
        channel, stub = mesh.citadel.stub()
        with channel:
            chain = create(stub, csr, mesh.citadel.token("qux", "tester"))
        (d / "cert.pem").write_text("".join(chain))
        (d / "key.pem").write_bytes(key_pem)
    return "-cert", str(d / "cert.pem"), "-key", str(d / "key.pem")


def test_strict_refuses_plaintext_and_tls_without_a_client_cert_permissive_accepts_both(mesh):
    # default (no PeerAuthentication anywhere): PERMISSIVE, plaintext and mTLS both reach the app
    status, body = eventually(lambda: plaintext(), "plaintext under the default PERMISSIVE")
    assert status == 200 and json.loads(body)["path"] == "/plain"
    assert "x-forwarded-client-cert" not in json.loads(body)["headers"]  # no peer certificate
    mesh.apply(peer_auth("STRICT"))
    try:
        eventually(lambda: plaintext() is None, "STRICT refuses a plaintext client")
        assert plaintext() is None  # and keeps refusing
        tls = openssl_client(mesh)
        assert "HTTP/1.1" not in tls.stdout, tls.stdout
        # the server's chain verified against citadel's root; the server then demanded a client certificate
        assert tls.returncode != 0 and "alert certificate required" in tls.stderr, tls.stderr
        # the same client with a certificate from citadel is served, and the app sees who it was
        tls = openssl_client(mesh, *client_cert(mesh))
        assert "HTTP/1.1 200" in tls.stdout, tls.stdout + tls.stderr
        assert "URI=spiffe://cluster.local/ns/qux/sa/tester" in tls.stdout
        # the mesh client (mTLS through its sidecar) still gets through
        status, body = call(mesh, "sleep", "/strict")
        assert status == 200 and "URI=spiffe://cluster.local/ns/foo/sa/sleep" in body.decode()

        mesh.apply(peer_auth("PERMISSIVE"))
        status, body = eventually(lambda: plaintext("/again"), "PERMISSIVE accepts plaintext again")
        assert status == 200 and json.loads(body)["path"] == "/again"
        status, body = call(mesh, "sleep", "/mtls")
        assert status == 200 and "URI=spiffe://cluster.local/ns/foo/sa/sleep" in body.decode()
        tls = openssl_client(mesh, *client_cert(mesh))
        assert "HTTP/1.1 200" in tls.stdout, tls.stdout + tls.stderr
    finally:
        mesh.delete(peer_auth("PERMISSIVE"))


# -- AuthorizationPolicy ---------------------------------------------------------------------------------


def with_policy(mesh, yaml_text: str):
    class _Policy:
        def __enter__(self):
            mesh.apply(yaml_text)

        def __exit__(self, *exc):
            mesh.delete(yaml_text)
            # restored: both clients get through again before the next test
            eventually(status_is(mesh, "sleep", "/restored", 200), "policy removed (sleep)")
            eventually(status_is(mesh, "other", "/restored", 200), "policy removed (other)")

    return _Policy()


def test_allow_by_principal(mesh):
    rules = '  - from: [{source: {principals: ["cluster.local/ns/foo/sa/sleep"]}}]\n'
    with with_policy(mesh, authz("allow-sleep", "ALLOW", rules)):
        status, body = eventually(status_is(mesh, "other", "/get", 403), "other denied")
        assert body == DENIED
        assert call(mesh, "sleep", "/get")[0] == 200


def test_allow_by_namespace(mesh):
    rules = "  - from: [{source: {namespaces: [baz]}}]\n"
    with with_policy(mesh, authz("allow-baz", "ALLOW", rules)):
        status, body = eventually(status_is(mesh, "sleep", "/get", 403), "namespace foo denied")
        assert body == DENIED
        assert call(mesh, "other", "/get")[0] == 200


def test_allow_when_a_request_header_matches(mesh):
    rules = "  - when: [{key: 'request.headers[x-token]', values: [letmein]}]\n"
    with with_policy(mesh, authz("allow-token", "ALLOW", rules)):
        status, body = eventually(status_is(mesh, "sleep", "/get", 403), "no header denied")
        assert body == DENIED
        assert call(mesh, "sleep", "/get", {"x-token": "letmein"})[0] == 200
        assert call(mesh, "sleep", "/get", {"x-token": "nope"})[0] == 403


TRICKY_ADMIN_PATHS = ["/admin", "/admin/../admin", "//admin", "/%61dmin", "/public/%2e%2e/admin", "/admin#x",
                      "/admin?x", "/admin/users"]  # fmt: skip


def test_deny_by_path_is_not_bypassed_by_encoding_tricks(mesh):
    # without the policy the tricks reach the app, already normalised by the server's sidecar
    status, body = eventually(status_is(mesh, "sleep", "/public/%2e%2e/admin", 200), "sleep -> httpbin")
    assert json.loads(body)["path"] == "/admin"
    rules = '  - to: [{operation: {paths: ["/admin*"]}}]\n'
    with with_policy(mesh, authz("deny-admin", "DENY", rules)):
        eventually(status_is(mesh, "sleep", "/admin", 403), "DENY /admin* applied")
        for path in TRICKY_ADMIN_PATHS:
            status, body = call(mesh, "sleep", path)
            assert (status, body) == (403, DENIED), f"{path}: {status} {body[:200]!r}"
        status, body = call(mesh, "sleep", "/public/page")
        assert status == 200 and json.loads(body)["path"] == "/public/page"


def test_proxy_status_shows_both_proxies_synced(mesh):
    def synced():
        out = mesh.isthmus("proxy-status", "--pilot", mesh.pilot_url).stdout
        rows = {line.split()[0]: line.split()[2:6] for line in out.splitlines()[1:] if line.strip()}
        wanted = {name: rows.get(name) for name in ("httpbin.bar", "sleep.foo", "other.baz")}
        return wanted if all(cols == ["SYNCED"] * 4 for cols in wanted.values()) else None

    # CDS, LDS, EDS and RDS of the server's and both clients' sidecars
    assert eventually(synced, "proxy-status SYNCED")
