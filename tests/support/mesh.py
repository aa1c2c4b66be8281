"""Bring the whole local mesh (`isthmus up`) up for a test module, and talk to it as a user would.

`free_block()` finds a random 127.X.Y.0/24 where every port of the mesh is free, so a test mesh does
not clash with a demo the user is running; `Mesh` runs `isthmus up` there with its own --state-dir.
Helpers: `isthmus(...)` runs a CLI command against the mesh's pilot, `apply`/`delete` Istio files,
`proxy_status()` parses `isthmus proxy-status`, `page()` fetches /productpage through the gateway,
`eventually()` polls a check with a deadline, `stars()`/`served_by()` read a Bookinfo page.
"""

from __future__ import annotations

import ipaddress
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bookinfo.common.headers import USER_COOKIE
from isthmus.launcher import state
from tests.support.processes import REPO

SAMPLES = REPO.parent / "shared" / "istio-samples" / "bookinfo" / "networking"
PORTS = (8060, 8061, 8062, 15010, 15014, 9091, 20001, 8080, 15000, 15001, 15006, 15021, 15090, 9080)
WORKLOADS = ("productpage", "details", "reviews-v1", "reviews-v2", "reviews-v3", "ratings")


def free_block() -> tuple[str, str]:
    """(control address, workload base) in a /24 of 127.0.0.0/8 where every port we use is free."""
    for _ in range(50):
        prefix = f"127.{random.randint(100, 250)}.{random.randint(0, 255)}"
        control, base = f"{prefix}.9", f"{prefix}.10"
        try:
            for last in range(9, 16):
                for port in PORTS:
                    with socket.socket() as s:
                        s.bind((f"{prefix}.{last}", port))
            for last in range(10, 16):  # the apps' private addresses behind their sidecars (+256)
                with socket.socket() as s:
                    s.bind((str(ipaddress.IPv4Address(f"{prefix}.{last}") + 256), 9080))
        except OSError:
            continue
        return control, base
    raise RuntimeError("no free loopback block")


class Mesh:
    def __init__(self, tmp: Path) -> None:
        self.control, self.base = free_block()
        self.state_dir = tmp / "state"
        self.log = tmp / "up.log"
        self._log = open(self.log, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "isthmus", "up", "--address-base", self.base,
             "--control-address", self.control, "--state-dir", str(self.state_dir), "--color", "never",
             "--drain", "1s"],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=tmp,
        )  # fmt: skip
        self.gateway = f"http://{self.control}:8080/productpage"
        self.pilot = f"http://{self.control}:15014"
        self.http = httpx.Client(trust_env=False, timeout=30)
        self.up: state.UpState | None = None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_up(self, timeout: float = 180) -> state.UpState:
        deadline = time.monotonic() + timeout
        while True:
            st = state.read(self.state_dir)
            if st is not None and st.supervisor_pid == self.proc.pid:
                self.up = st
                return st
            assert self.proc.poll() is None, (
                f"isthmus up exited {self.proc.returncode}:\n{self.output()[-5000:]}"
            )
            assert time.monotonic() < deadline, f"not up after {timeout}s:\n{self.output()[-5000:]}"
            time.sleep(0.2)

    def state(self) -> state.UpState:
        """The state file as it is now (PIDs of restarted processes included)."""
        st = state.read(self.state_dir)
        assert st is not None, "the state file is gone"
        return st

    def ip(self, workload: str) -> str:
        """The loopback address of a Bookinfo workload (its sidecar's address)."""
        return str(ipaddress.IPv4Address(self.base) + WORKLOADS.index(workload))

    def isthmus(self, *args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "isthmus", *args, "--pilot", self.pilot],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr + out.stdout
        return out.stdout

    def apply(self, path: str | Path) -> str:
        return self.isthmus("apply", "-f", str(path))

    def delete(self, path: str | Path, check: bool = True) -> None:
        out = subprocess.run(
            [sys.executable, "-m", "isthmus", "delete", "-f", str(path), "--pilot", self.pilot],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert not check or out.returncode == 0, out.stderr + out.stdout

    def proxy_status(self) -> dict[str, list[str]]:
        """`isthmus proxy-status` as {proxy name: [CDS, LDS, EDS, RDS]}."""
        out = self.isthmus("proxy-status")
        rows = [line.split() for line in out.splitlines()[1:] if line.strip()]
        return {r[0]: r[2:6] for r in rows}

    def page(self, user: str | None = None) -> str:
        r = self.http.get(self.gateway, headers={"cookie": f"{USER_COOKIE}={user}"} if user else {})
        assert r.status_code == 200, r.text[:500]
        return r.text

    def stat(self, ip: str, name: str) -> int:
        """One counter from a proxy's admin /stats (0 when absent)."""
        text = self.http.get(f"http://{ip}:15000/stats").text
        m = re.search(rf"^{re.escape(name)}: (\d+)$", text, re.M)
        return int(m.group(1)) if m else 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(90)
            except subprocess.TimeoutExpired:
                self.proc.kill()  # our own child, by PID
                self.proc.wait()
        self.http.close()
        self._log.close()

    def kill_leftovers(self) -> None:
        """After stop(): SIGKILL the process group of any recorded child still alive (by PID only)."""
        pids = set((self.up or state.UpState(0)).children.values())
        try:
            current = state.read(self.state_dir)
        except ValueError:
            current = None
        if current is not None:
            pids |= set(current.children.values())
        for pid in pids:
            if pid > 0 and state.alive(pid):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def stars(html: str) -> str:
    if 'color="red"' in html:
        return "red"
    if 'color="black"' in html:
        return "black"
    return "none"


def served_by(html: str) -> str:
    m = re.search(r'class="served-by">([^<]+)<', html)
    return m.group(1) if m else ""


def eventually(check, timeout: float = 20, what: str = "the applied config did not take effect in time"):
    """Things reach the proxies asynchronously: poll until `check()` is truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


class Page:
    """What one request through the gateway got back, as a user reads the page."""

    __slots__ = ("status", "error", "html", "started", "ended")

    def __init__(self, status: int, html: str, started: float, ended: float, error: str = "") -> None:
        self.status, self.html, self.started, self.ended, self.error = status, html, started, ended, error

    @property
    def ok(self) -> bool:
        return self.status == 200 and not self.error

    @property
    def details_ok(self) -> bool:
        return "Book Details" in self.html and "Error fetching product details" not in self.html

    @property
    def reviews_ok(self) -> bool:
        return "Book Reviews" in self.html and "Error fetching product reviews" not in self.html

    @property
    def ratings_unavailable(self) -> bool:
        return "Ratings service is currently unavailable" in self.html

    @property
    def stars(self) -> str:
        return stars(self.html)

    @property
    def served_by(self) -> str:
        return served_by(self.html)

    def __repr__(self) -> str:
        return f"Page({self.status}, {self.error or self.served_by}, {self.stars})"


class Load:
    """A load generator: `clients` threads, each with its own keep-alive connection, fetching the
    gateway's /productpage back to back until stop(). Every answer (or transport error) is kept."""

    def __init__(self, url: str, clients: int = 4, timeout: float = 30) -> None:
        import threading

        self.url, self.clients, self.timeout = url, clients, timeout
        self.pages: list[Page] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        with httpx.Client(trust_env=False, timeout=self.timeout) as http:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    r = http.get(self.url)
                    page = Page(r.status_code, r.text, started, time.monotonic())
                except httpx.HTTPError as e:
                    page = Page(0, "", started, time.monotonic(), f"{type(e).__name__}: {e}")
                self.pages.append(page)  # list.append is atomic

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> list[Page]:
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout + 5)
        return self.pages

    def since(self, t: float) -> list[Page]:
        """Pages whose request started at or after monotonic time t."""
        return [p for p in list(self.pages) if p.started >= t]

    def wait_for(self, check, count: int = 5, timeout: float = 30, what: str = "") -> None:
        """Wait until the last `count` pages that started from now on all satisfy check(page)."""
        t = time.monotonic()
        eventually(
            lambda: len(later := self.since(t)) >= count and all(check(p) for p in later[-count:]),
            timeout,
            what or f"the last {count} pages never all satisfied the check",
        )
