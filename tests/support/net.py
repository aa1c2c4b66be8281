"""Socket helpers for tests: free ports and readiness waits (never sleep-and-hope)."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float = 15.0, proc=None) -> None:
    """Wait until something accepts TCP connections on host:port.

    If `proc` (a Popen) exits first, fail at once with its output instead of waiting out the timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"process {proc.args!r} exited with {proc.returncode} before {host}:{port} was ready"
            )
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{host}:{port} not accepting connections after {timeout}s") from None
            time.sleep(0.02)


def wait_for_http(url: str, timeout: float = 15.0, status: int = 200, proc=None) -> bytes:
    """Wait until GET url answers with `status`; return the body."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode} before {url} was ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                body = resp.read()
                if resp.status == status:
                    return body
                last = resp.status
        except urllib.error.HTTPError as e:
            last = e.code
            if e.code == status:
                return e.read()
        except OSError as e:
            last = e
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer {status} within {timeout}s (last: {last!r})")
        time.sleep(0.05)
