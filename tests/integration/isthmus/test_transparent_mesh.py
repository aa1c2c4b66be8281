"""Transparent mode driven by pilot (needs root): citadel and pilot in a control namespace without a
sidecar; "sleep" and "httpbin" each with an agent + sidecar (INTERCEPTION_MODE REDIRECT) behind
istio-init's rules. A plain `GET http://httpbin:9080/` from inside sleep's namespace (name from
/etc/netns hosts, no proxy settings) is captured by sleep's sidecar, sent over mTLS to httpbin's sidecar
and on to the app, which sees XFCC with sleep's SPIFFE ID; a VirtualService applied through pilot's API
changes what sleep sees; every namespace and process is gone afterwards.

The agents and proxies run as UID and GID 1337 (setpriv), so istio-init's owner rules treat them as the
proxy. The interpreter lives under /root (0700), which UID 1337 cannot traverse: they keep one ambient
capability, CAP_DAC_READ_SEARCH (read and search any file, nothing else), which the proxy the agent
starts inherits. With UID 1337, the server sidecar's connection to its own pod IP is the one istio-init
sends back to 15006 unless it leaves from 127.0.0.6: pilot's inbound clusters bind that source address
(``upstream_bind_config``), as Istio's do.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from isthmus.launcher.netns import Workload
from tests.support.processes import REPO
from tests.support.transparent import TransparentMesh, transparent_mesh  # noqa: F401 (fixture)

pytestmark = pytest.mark.netns

APP_PORT = 9080
CITADEL_GRPC, CITADEL_MTLS, CITADEL_HTTP = 15012, 15013, 15014
PILOT_GRPC, PILOT_HTTP = 15010, 8080
PROXY_ID = 1337
AS_PROXY = [
    "setpriv", f"--reuid={PROXY_ID}", f"--regid={PROXY_ID}", "--clear-groups",
    "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search", "--",
]  # fmt: skip
SLEEP_SPIFFE = "spiffe://cluster.local/ns/default/sa/sleep"

FAULT_VS = """\
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: httpbin
  namespace: default
spec:
  hosts: [httpbin]
  http:
  - match:
    - headers:
        x-fault: {exact: teapot}
    fault:
      abort:
        httpStatus: 418
        percentage: {value: 100}
    route:
    - destination: {host: httpbin}
  - route:
    - destination: {host: httpbin}
"""


class ControlPlane:
    def __init__(self, mesh: TransparentMesh, tmp: Path) -> None:
        self.mesh = mesh
        self.tmp = tmp
        self.ip = mesh.ip("control")
        self.ca_dir = tmp / "ca"
        self.citadel = mesh.popen(
            "control",
            [
                sys.executable, "-m", "citadel", "--root-dir", str(self.ca_dir),
                "--grpc-addr", f"{self.ip}:{CITADEL_GRPC}", "--grpc-mtls-addr", f"{self.ip}:{CITADEL_MTLS}",
                "--http-addr", f"{self.ip}:{CITADEL_HTTP}", "--server-ips", self.ip,
            ],
        )  # fmt: skip
        self.config_dir = tmp / "config"
        self.config_dir.mkdir()
        self.pilot = mesh.popen(
            "control",
            [
                sys.executable, "-m", "pilot", "--config-dir", str(self.config_dir),
                "--grpc-addr", f"{self.ip}:{PILOT_GRPC}", "--http-addr", f"{self.ip}:{PILOT_HTTP}",
            ],
        )  # fmt: skip
        for port in (CITADEL_HTTP, CITADEL_GRPC, CITADEL_MTLS):
            mesh.wait_for_port("control", self.ip, port, proc=self.citadel, timeout=30)
        mesh.wait_for_port("control", self.ip, PILOT_HTTP, proc=self.pilot, timeout=30)
        mesh.wait_for_port("control", self.ip, PILOT_GRPC, proc=self.pilot, timeout=30)

    @property
    def pilot_url(self) -> str:
        return f"http://{self.ip}:{PILOT_HTTP}"

    def token(self, sa: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "isthmus", "token", "create", "--namespace", "default",
             "--service-account", sa, "--ttl", "1h", "--root-dir", str(self.ca_dir)],
            capture_output=True, text=True, check=True, cwd=REPO,
        )  # fmt: skip
        return out.stdout.strip()

    def isthmus(self, verb: str, yaml_text: str) -> None:
        path = self.tmp / f"{verb}-{time.monotonic_ns()}.yaml"
        path.write_text(yaml_text)
        self.mesh.exec(
            "control", [sys.executable, "-m", "isthmus", verb, "-f", str(path), "--pilot", self.pilot_url]
        )

    def start_sidecar(self, name: str, service_port: int = 0, *extra: str) -> subprocess.Popen:
        d = self.tmp / name
        d.mkdir()
        d.chmod(0o777)
        token = d / "token"
        token.write_text(self.token(name))
        root = d / "root-cert.pem"  # citadel's dir is private (it holds the root key)
        root.write_bytes((self.ca_dir / "root-cert.pem").read_bytes())
        for f in (token, root):
            f.chmod(0o644)
        args = [
            sys.executable, "-m", "proxy.agent", "--type", "sidecar",
            "--citadel", f"{self.ip}:{CITADEL_GRPC}", "--citadel-mtls", f"{self.ip}:{CITADEL_MTLS}",
            "--root-cert", str(root), "--token-file", str(token),
            "--sds-socket", str(d / "SDS"), "--bootstrap", str(d / "envoy-rev.json"),
            "--namespace", "default", "--service-account", name, "--name", name,
            "--ip", self.mesh.ip(name), "--label", f"app={name}",
            "--discovery-address", f"{self.ip}:{PILOT_GRPC}",
            "--interception-mode", "REDIRECT", "--drain-duration", "1s", "--cert-ttl", "1h",
        ]  # fmt: skip
        if service_port:  # auto-registration: pilot learns the service from the agent's node metadata
            args += ["--service", name, "--service-ports", f"http:{service_port}"]
        agent = self.mesh.popen(name, [*AS_PROXY, *args, *extra], env={"HOME": str(d)})
        wait_http(self.mesh, name, f"http://{self.mesh.ip(name)}:15021/healthz/ready", 200, proc=agent)
        return agent


def wait_http(
    mesh: TransparentMesh,
    ns: str,
    url: str,
    want: int,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
    proc: subprocess.Popen | None = None,
) -> tuple[int, bytes]:
    """GET `url` from inside `ns` until it answers `want` (pilot's pushes are asynchronous)."""
    deadline = time.monotonic() + timeout
    last: tuple[int, bytes] | str = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{proc.args!r} exited {proc.returncode}:\n{mesh.output(proc)}")
        try:
            last = mesh.http_get(ns, url, headers=headers)
        except AssertionError as e:  # refused / reset while the config arrives
            last = str(e)
        if isinstance(last, tuple) and last[0] == want:
            return last
        time.sleep(0.2)
    detail = mesh.output(proc) if proc is not None else ""
    raise AssertionError(f"GET {url} in {ns}: wanted {want}, last {last!r}\n{detail[-4000:]}")


@pytest.fixture
def workdir():
    d = Path(tempfile.mkdtemp(prefix="isthmus-tmesh-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_plain_client_reaches_httpbin_through_both_sidecars_over_mtls_and_follows_pilot(
    transparent_mesh,  # noqa: F811
    workdir,
):
    mesh = transparent_mesh([Workload("control", sidecar=False), Workload("sleep"), Workload("httpbin")])
    control = ControlPlane(mesh, workdir)

    app = mesh.popen(
        "httpbin",
        [sys.executable, "-m", "tests.support.upstream_app", "--host", "0.0.0.0", "--port", str(APP_PORT),
         "--name", "httpbin"],
    )  # fmt: skip
    mesh.wait_for_port("httpbin", mesh.ip("httpbin"), APP_PORT, proc=app)
    server_agent = control.start_sidecar("httpbin", service_port=APP_PORT)
    client_agent = control.start_sidecar("sleep")

    # A plain call by name from sleep's namespace: captured, mTLS between the sidecars, on to the app.
    url = f"http://httpbin:{APP_PORT}/hello"
    status, body = wait_http(mesh, "sleep", url, 200, proc=client_agent)
    seen = json.loads(body)
    assert seen["upstream"] == "httpbin" and seen["path"] == "/hello"
    xfcc = seen["headers"].get("x-forwarded-client-cert", "")
    assert f"URI={SLEEP_SPIFFE}" in xfcc, seen["headers"]
    assert "spiffe://cluster.local/ns/default/sa/httpbin" in xfcc  # By=: the server sidecar's identity

    # The server sidecar's own connection to the app went out once (bound to 127.0.0.6), not into 15006
    # again: its inbound cluster counted the request.
    status, body = mesh.http_get("httpbin", f"http://{mesh.ip('httpbin')}:15000/stats?format=json")
    assert status == 200, body
    stats = {s["name"]: s.get("value") for s in json.loads(body)["stats"] if "name" in s}
    assert stats.get(f"cluster.inbound|{APP_PORT}||.upstream_rq_total", 0) >= 1, stats
    assert stats.get(f"cluster.inbound|{APP_PORT}||.upstream_cx_connect_fail", 0) == 0

    # A VirtualService applied through pilot's API changes what sleep sees.
    control.isthmus("apply", FAULT_VS)
    status, body = wait_http(mesh, "sleep", url, 418, headers={"x-fault": "teapot"}, proc=client_agent)
    assert mesh.http_get("sleep", url)[0] == 200  # without the header: the default route
    control.isthmus("delete", FAULT_VS)
    wait_http(mesh, "sleep", url, 200, headers={"x-fault": "teapot"}, proc=client_agent)

    assert server_agent.poll() is None and client_agent.poll() is None

    problems = mesh.teardown()
    assert problems == []
    assert mesh.leftovers() == []
    for proc in (control.citadel, control.pilot, app, server_agent, client_agent):
        assert proc.poll() is not None
