"""Run `isthmus up` as a user would, on addresses and a port that do not clash with a running demo."""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import time
from dataclasses import dataclass

from isthmus.launcher.topology import BOOKINFO_SLOTS
from tests.support.net import free_port

STARTED = re.compile(r"event=process\.started workload=(\S+) pid=(\d+)")


def free_port_on_all(addresses: list[str]) -> int:
    """A port that is free on every one of `addresses`."""
    for _ in range(50):
        port = free_port(addresses[0])
        try:
            for address in addresses[1:]:
                with socket.socket() as s:
                    s.bind((address, port))
            return port
        except OSError:
            continue
    raise RuntimeError(f"no port free on all of {addresses}")


@dataclass
class Mesh:
    proc: object
    procs: object
    base: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.base}:{self.port}/productpage"

    def address(self, workload: str) -> str:
        return str(ipaddress.IPv4Address(self.base) + BOOKINFO_SLOTS.index(workload))

    def output(self) -> str:
        return self.procs.output(self.proc)

    def wait_for_output(self, pattern: str, timeout: float = 60.0) -> re.Match:
        """Wait until the output matches `pattern` (a regex); fail at once if isthmus exits."""
        deadline = time.monotonic() + timeout
        while True:
            match = re.search(pattern, self.output())
            if match:
                return match
            if self.proc.poll() is not None:
                raise AssertionError(f"isthmus exited with {self.proc.returncode}:\n{self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} not in isthmus output after {timeout}s:\n{self.output()}")
            time.sleep(0.05)

    def child_pids(self) -> dict[str, int]:
        """The latest PID isthmus reported for each workload."""
        return {name: int(pid) for name, pid in STARTED.findall(self.output())}


def start(procs, base: str, port: int | None = None) -> Mesh:
    addresses = [str(ipaddress.IPv4Address(base) + i) for i in range(len(BOOKINFO_SLOTS))]
    port = port or free_port_on_all(addresses)
    proc = procs.python(
        "-m", "isthmus", "up", "--apps-only", "--address-base", base, "--port", str(port), "--color", "never"
    )
    return Mesh(proc, procs, base, port)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
