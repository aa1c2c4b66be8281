"""The newcomer test: what a person does on their first day, from a fresh clone of the committed HEAD.

`git clone` into a temporary directory (with ../shared beside it, as in CI), `make demo` in the
background, exactly as the README says, on a free loopback block and its own state dir (through
`make demo ARGS=...`) so that it does not clash with a demo the user runs on the default addresses.
Within 90 s of typing `make demo` (set-up of the clone's .venv included) the gateway URL answers;
the product page renders in headless Chromium with reviews; `isthmus logs` shows the processes'
output; `isthmus dashboard --no-browser` prints a URL whose page draws the Bookinfo graph. Ctrl-C
(SIGINT to make's process group) then leaves no process and no network namespace behind.

Deselect with ``-m "not newcomer"``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from isthmus.launcher import state
from tests.support.mesh import SAMPLES, WORKLOADS, free_block
from tests.support.processes import REPO

SHARED = REPO.parent / "shared"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
BUDGET_S = 90.0  # from `make demo` to the gateway answering, as the issue asks

pytestmark = [
    pytest.mark.newcomer,
    pytest.mark.browser,
    pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"needs Istio's samples in {SAMPLES}"),
    pytest.mark.skipif(not (REPO / ".git").exists(), reason="needs the git repository to clone"),
]


def newcomer_env() -> dict[str, str]:
    """The environment of a person who has not activated anything: no venv of ours on PATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    ours = str(REPO / ".venv")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(ours))
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("MAKEFLAGS", None)
    env.pop("MFLAGS", None)
    return env


def netns_names() -> set[str]:
    try:
        out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return set()
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def processes_inside(root: Path) -> list[str]:
    """Processes whose working directory or command line is inside `root` (this one excepted)."""
    found = []
    root_s = str(root)
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
            cmdline = (
                Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            )
        except OSError:
            continue
        if not state.alive(int(entry)):
            continue
        if cwd == root_s or cwd.startswith(root_s + "/") or root_s in cmdline:
            found.append(f"{entry} (cwd {cwd}): {cmdline.strip()[:200]}")
    return found


class Demo:
    """`make demo` running in the clone, in its own process group, output to a file."""

    def __init__(self, clone: Path, log: Path) -> None:
        self.clone = clone
        self.control, self.base = free_block()
        self.state_dir = clone / ".isthmus" / "nc"
        self.gateway = f"http://{self.control}:8080/productpage"
        self.mixer = f"http://{self.control}:20001"
        self.log = log
        self.env = newcomer_env()
        args = (
            f"--control-address {self.control} --address-base {self.base} "
            f"--state-dir {self.state_dir} --color never --drain 1s"
        )
        self.started = time.monotonic()
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                ["make", "demo", f"ARGS={args}"],
                cwd=clone,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pids: dict[str, int] = {}
        self.setup_done_at: float | None = None

    def tail(self, n: int = 80) -> str:
        lines = self.log.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def diagnose(self, what: str) -> str:
        setup = f"{self.setup_done_at - self.started:.1f}s" if self.setup_done_at else "not finished"
        return (
            f"{what}\n(after {time.monotonic() - self.started:.1f}s; set-up of the clone's .venv: {setup}; "
            f"make demo {'exited with ' + str(self.proc.returncode) if self.proc.poll() is not None else 'running'})"
            f"\n--- last lines of make demo ---\n{self.tail()}"
        )

    def isthmus(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.clone / ".venv" / "bin" / "isthmus"), *args],
            cwd=self.clone,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def record_pids(self) -> None:
        try:
            st = state.read(self.state_dir)
        except ValueError:
            return
        if st is not None:
            self.pids["isthmus up"] = st.supervisor_pid
            self.pids.update(st.children)

    def wait_gateway(self, budget: float) -> float:
        """Seconds from `make demo` to the gateway URL answering 200 with the product page."""
        stamp = self.clone / ".venv" / ".isthmus-installed"
        with httpx.Client(trust_env=False, timeout=5) as http:
            while True:
                if self.setup_done_at is None and stamp.exists():
                    self.setup_done_at = time.monotonic()
                if self.proc.poll() is not None:
                    pytest.fail(self.diagnose("make demo exited before the gateway answered"))
                try:
                    r = http.get(self.gateway)
                    if r.status_code == 200 and "Book Details" in r.text:
                        return time.monotonic() - self.started
                except httpx.HTTPError:
                    pass
                if time.monotonic() - self.started > budget:
                    pytest.fail(
                        self.diagnose(f"{self.gateway} did not answer within {budget:g}s of make demo")
                    )
                time.sleep(0.2)

    def kill_leftovers(self) -> None:
        """Only on failure paths: everything this demo started, by the PIDs we know."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        for pid in self.pids.values():
            if state.alive(pid):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


@pytest.fixture
def clone() -> Iterator[Path]:
    """A fresh clone of the committed HEAD, with ../shared beside it (a symlink, as CI lays it).

    Under a short /tmp path: the agents' SDS sockets live in the state dir, and a Unix socket path
    may not exceed 107 bytes (pytest's tmp_path is too deep for that)."""
    root = Path(tempfile.mkdtemp(prefix="nc-", dir="/tmp"))
    try:
        subprocess.run(["git", "clone", "-q", str(REPO), str(root / "main")], check=True, timeout=120)
        (root / "shared").symlink_to(SHARED)
        yield root / "main"
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.timeout(600)
def test_make_demo_from_a_fresh_clone(clone, tmp_path, artifacts_dir):
    sync_api = pytest.importorskip("playwright.sync_api")
    namespaces_before = netns_names()
    demo = Demo(clone, tmp_path / "make-demo.log")
    try:
        took = demo.wait_gateway(BUDGET_S)
        setup = demo.setup_done_at - demo.started if demo.setup_done_at else float("nan")
        print(f"newcomer: gateway answered {took:.1f}s after make demo (set-up {setup:.1f}s)")
        # The state file is written once the supervisor's own readiness check of the gateway passed.
        deadline = time.monotonic() + 60
        while not set(WORKLOADS) <= set(demo.pids) and time.monotonic() < deadline:
            time.sleep(0.2)
            demo.record_pids()
        assert set(WORKLOADS) <= set(demo.pids), demo.diagnose(f"state file lists {sorted(demo.pids)}")

        # Traffic through the gateway (all three reviews versions, ratings behind v2 and v3).
        with httpx.Client(trust_env=False, timeout=30) as http:
            for _ in range(12):
                r = http.get(demo.gateway)
                assert r.status_code == 200, demo.diagnose(f"gateway answered {r.status_code}")

        # `isthmus logs`, as the README shows it.
        sd = str(demo.state_dir)
        pilot = demo.isthmus("logs", "pilot", "--tail", "5", "--state-dir", sd)
        assert pilot.returncode == 0, pilot.stderr
        assert 1 <= len(pilot.stdout.splitlines()) <= 5 and "component=pilot" in pilot.stdout, pilot.stdout
        sidecar = demo.isthmus("logs", "productpage", "-c", "istio-proxy", "--state-dir", sd)
        assert sidecar.returncode == 0 and sidecar.stdout.strip(), sidecar.stderr
        assert "component=pilot" not in sidecar.stdout
        everything = demo.isthmus("logs", "--tail", "50", "--state-dir", sd)
        assert everything.returncode == 0
        assert re.search(r"^\S+\s+\| ", everything.stdout, re.M), everything.stdout  # prefixed by workload
        unknown = demo.isthmus("logs", "reviews-v9", "--state-dir", sd)
        assert unknown.returncode == 1 and "no process 'reviews-v9'" in unknown.stderr
        assert "reviews-v2-sidecar" in unknown.stderr  # the known names are listed
        follower = subprocess.Popen(
            [str(clone / ".venv" / "bin" / "isthmus"), "logs", "-f", "--tail", "0", "--state-dir", sd],
            cwd=clone,
            env=demo.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        demo.pids["isthmus logs -f"] = follower.pid

        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                errors: list[str] = []
                context = browser.new_context()
                context.on("weberror", lambda e: errors.append(str(e.error)))
                page = context.new_page()
                page.goto(demo.gateway)
                expect = sync_api.expect
                expect(page.locator("h3.title")).to_have_text("The Comedy of Errors")
                expect(page.locator("#details")).to_contain_text("Book Details")
                expect(page.locator("#reviews")).to_contain_text("Book Reviews")
                expect(page.locator("#reviews blockquote.review")).to_have_count(2)
                expect(page.locator("#reviews")).to_contain_text("Reviewer1")
                page.screenshot(path=str(artifacts_dir / "newcomer-productpage.png"), full_page=True)

                dashboard = demo.isthmus("dashboard", "--no-browser", "--mixer", demo.mixer)
                assert dashboard.returncode == 0, dashboard.stderr
                urls = re.findall(r"https?://\S+", dashboard.stdout)
                assert urls, dashboard.stdout
                page = context.new_page()
                page.set_viewport_size({"width": 1280, "height": 1300})
                page.goto(urls[0])
                want = [
                    "details v1",
                    "productpage v1",
                    "ratings v1",
                    "reviews v1",
                    "reviews v2",
                    "reviews v3",
                ]
                page.wait_for_function(
                    "want => window.cy && want.every(l => window.cy.nodes('[kind = \"workload\"]')"
                    ".map(n => n.data('label')).includes(l))",
                    arg=want,
                    timeout=60_000,
                )
                page.screenshot(path=str(artifacts_dir / "newcomer-dashboard.png"), full_page=True)
                assert errors == [], f"JavaScript errors: {errors}"
            finally:
                browser.close()

        # Ctrl-C in the terminal: SIGINT to make's process group.
        demo.record_pids()
        os.killpg(demo.proc.pid, signal.SIGINT)
        try:
            demo.proc.wait(120)
        except subprocess.TimeoutExpired:
            pytest.fail(demo.diagnose("make demo still running 120 s after Ctrl-C"))
        out, _ = follower.communicate(timeout=30)  # `isthmus logs -f` ends with the mesh
        assert follower.returncode == 0, out
        left = {name: pid for name, pid in demo.pids.items() if state.alive(pid)}
        assert left == {}, demo.diagnose(f"processes left after Ctrl-C: {left}")
        assert processes_inside(clone.parent) == [], demo.diagnose("processes left inside the clone")
        assert netns_names() - namespaces_before == set(), "network namespaces left behind"
        assert not state.path(demo.state_dir).exists(), "the state file outlived the mesh"
        stopped = demo.isthmus("logs", "--state-dir", sd)
        assert stopped.returncode == 1 and "no mesh is running" in stopped.stderr
    finally:
        demo.kill_leftovers()
