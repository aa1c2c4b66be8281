"""Transparent mode for tests: workloads in their own network namespaces on a bridge, with istio-init's
capture rules (needs root; mark such tests `@pytest.mark.netns`).

    from tests.support.transparent import transparent_mesh  # noqa: F401  (the fixture)

    def test_x(transparent_mesh):
        mesh = transparent_mesh(["client", "server"])
        app = mesh.popen("server", [sys.executable, "-m", "tests.support.upstream_app", ...])
        mesh.wait_for_port("server", "127.0.0.1", 9080, proc=app)
        mesh.popen("server", [sys.executable, "-m", "proxy", "-c", path], uid=mesh.proxy_uid)
        status, body = mesh.http_get("client", "http://server:9080/")

Every process started with `.popen` is tracked by PID and killed at teardown; then every namespace,
veth, bridge and /etc/netns dir of the run is removed, even when the test failed. Tests only ever send
traffic inside the namespaces (198.18.0.0/24 and their own loopback).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest

from isthmus.launcher.netns import NETNS_DIR, Capture, Workload, plan_mesh
from isthmus.launcher.netns_runner import NetnsMesh, list_leftovers
from tests.support.processes import REPO


class TransparentMesh:
    def __init__(
        self, workloads: Sequence[str | Workload], prefix: str = "isth-", capture: Capture | None = None
    ) -> None:
        wl = [w if isinstance(w, Workload) else Workload(w) for w in workloads]
        self.plan = plan_mesh(wl, prefix=prefix, capture=capture)
        self.net = NetnsMesh(self.plan)
        self.proxy_uid = self.plan.capture.proxy_uid
        self._procs: list[tuple[subprocess.Popen, Path]] = []
        self._files: list[Path] = []

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> TransparentMesh:
        self.net.apply()
        return self

    def __enter__(self) -> TransparentMesh:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.teardown()

    def teardown(self) -> list[str]:
        """Kill our processes (by PID), then remove every namespace/link/dir of this run."""
        for proc, _ in reversed(self._procs):
            if proc.poll() is None:
                try:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        problems = self.net.teardown()
        for _, log in self._procs:
            log.unlink(missing_ok=True)
        for path in self._files:
            path.unlink(missing_ok=True)
        self._procs.clear()
        self._files.clear()
        return problems

    def leftovers(self) -> list[str]:
        """Names of this run still present (namespaces, host links, /etc/netns dirs): [] after teardown."""
        found = list_leftovers(self.plan.prefix, netns_dir=NETNS_DIR)
        base = self.plan.hub_netns
        return [n for names in found.values() for n in names if n == base or n.startswith(base + "-")]

    # -- addressing ----------------------------------------------------------------------------------
    def ip(self, workload: str) -> str:
        return self.plan.get(workload).ip

    def netns(self, workload: str) -> str:
        return self.plan.get(workload).netns

    # -- running things inside -----------------------------------------------------------------------
    def exec(
        self, ns: str, argv: Sequence[str], uid: int | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess:
        """Run `argv` in workload `ns` (as `uid` if given) and wait; raise with its output on failure."""
        result = self.net.exec(ns, argv, uid=uid, timeout=timeout, cwd=REPO)
        if check and result.returncode != 0:
            raise AssertionError(
                f"{list(argv)!r} in {ns} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
            )
        return result

    def popen(
        self, ns: str, argv: Sequence[str], uid: int | None = None, env: dict[str, str] | None = None
    ) -> subprocess.Popen:
        """Start `argv` in workload `ns`; output goes to a log (`output(proc)`); killed at teardown."""
        log = Path(tempfile.mkstemp(prefix="isthmus-netns-", suffix=".log")[1])
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        with open(log, "wb") as out:
            proc = self.net.popen(
                ns,
                argv,
                uid=uid,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=full_env,
                cwd=REPO,
                start_new_session=True,
            )
        self._procs.append((proc, log))
        return proc

    def output(self, proc: subprocess.Popen) -> str:
        for p, log in self._procs:
            if p is proc:
                return log.read_text(errors="replace")
        raise KeyError(proc)

    def python(self, ns: str, code: str, uid: int | None = None, timeout: float = 60) -> str:
        """Run a Python snippet in workload `ns`; return its stdout."""
        return self.exec(ns, [sys.executable, "-c", textwrap.dedent(code)], uid=uid, timeout=timeout).stdout

    def write_file(self, text: str, suffix: str = ".yaml") -> Path:
        """A temp file readable by the proxy's UID; removed at teardown."""
        path = Path(tempfile.mkstemp(prefix="isthmus-netns-", suffix=suffix)[1])
        path.write_text(text)
        path.chmod(0o644)
        self._files.append(path)
        return path

    def wait_for_port(
        self, ns: str, host: str, port: int, timeout: float = 20, proc: subprocess.Popen | None = None
    ) -> None:
        """Wait (inside `ns`) until host:port accepts; fail at once with its output if `proc` died."""
        code = f"""
            import socket, sys, time
            deadline = time.monotonic() + {timeout}
            while True:
                try:
                    socket.create_connection(({host!r}, {port}), timeout=0.5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        sys.exit("{host}:{port} not accepting after {timeout}s")
                    time.sleep(0.05)
        """
        result = self.net.exec(ns, [sys.executable, "-c", textwrap.dedent(code)], timeout=timeout + 10)
        if result.returncode != 0:
            detail = self.output(proc) if proc is not None else ""
            raise AssertionError(f"in {ns}: {result.stderr.strip()}\n{detail}")
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{proc.args!r} exited with {proc.returncode}:\n{self.output(proc)}")

    def http_get(
        self, ns: str, url: str, uid: int | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        """GET `url` from inside `ns` with plain urllib and no proxy settings: (status, body)."""
        code = f"""
            import json, sys, urllib.error, urllib.request
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({{}}))
            req = urllib.request.Request({url!r}, headers={headers or {}!r})
            try:
                with opener.open(req, timeout=10) as r:
                    status, body = r.status, r.read()
            except urllib.error.HTTPError as e:
                status, body = e.code, e.read()
            print(json.dumps({{"status": status, "body": body.decode("latin-1")}}))
        """
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        result = self.net.exec(ns, [sys.executable, "-c", textwrap.dedent(code)], uid=uid, env=env, cwd=REPO)
        if result.returncode != 0:
            raise AssertionError(f"GET {url} in {ns} failed:\n{result.stderr}")
        out = json.loads(result.stdout)
        return out["status"], out["body"].encode("latin-1")

    def admin_stats(self, ns: str, port: int = 15000) -> dict[str, object]:
        """The proxy's counters and gauges in `ns`, from its admin /stats?format=json."""
        status, body = self.http_get(ns, f"http://127.0.0.1:{port}/stats?format=json")
        assert status == 200, body
        return {s["name"]: s.get("value") for s in json.loads(body)["stats"] if "name" in s}


@pytest.fixture
def transparent_mesh():
    """A factory: `transparent_mesh(["client", "server"], prefix=..., capture=...)` -> TransparentMesh,
    up and running. Everything each one made is removed when the test ends, pass or fail."""
    made: list[TransparentMesh] = []

    def factory(workloads: Sequence[str | Workload], **kw) -> TransparentMesh:
        mesh = TransparentMesh(workloads, **kw)
        made.append(mesh)
        return mesh.start()

    try:
        yield factory
    finally:
        for mesh in reversed(made):
            mesh.teardown()
