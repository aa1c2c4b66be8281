"""The real proxy process and admin client behind proxy.agent.supervisor's protocols (I/O only).

The proxy runs as ``python -m proxy -c <bootstrap>`` in its own process group, so a Ctrl-C in the
terminal reaches the agent alone and the agent decides how the proxy stops (drain first). On Linux the
proxy also gets SIGKILL if the agent itself dies (PR_SET_PDEATHSIG), so no proxy outlives its agent.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import signal
import sys
from collections.abc import Callable
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _pdeathsig_hook() -> Callable[[], None] | None:
    """A preexec function that only calls an already-resolved prctl (nothing to import or allocate in
    the forked child)."""
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    if not name:
        return None
    prctl = ctypes.CDLL(name, use_errno=True).prctl
    sig = int(signal.SIGKILL)

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)

    return hook


def proxy_command(bootstrap_path: Path, drain_seconds: float, log_level: str | None) -> list[str]:
    """Envoy's flags: the config, and --drain-time-s as Istio passes its drain duration."""
    args = [
        sys.executable,
        "-m",
        "proxy",
        "-c",
        str(bootstrap_path),
        "--drain-time-s",
        str(max(1, round(drain_seconds))),
    ]
    if log_level:
        args += ["-l", log_level]
    return args


class SubprocessProxy:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.pid = proc.pid

    async def wait(self) -> int:
        return await self.proc.wait()

    def signal(self, sig: int) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)


class SubprocessLauncher:
    def __init__(self, command: list[str]) -> None:
        self.command = command
        self._hook = _pdeathsig_hook()

    async def start(self) -> SubprocessProxy:
        proc = await asyncio.create_subprocess_exec(
            *self.command, stdin=asyncio.subprocess.DEVNULL, process_group=0, preexec_fn=self._hook
        )
        return SubprocessProxy(proc)


async def http_request(
    host: str, port: int, method: str, path: str, timeout: float = 2.0
) -> tuple[int, bytes]:
    """One HTTP/1.1 request with `Connection: close`; (status, body). Raises OSError on any failure."""

    async def exchange() -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(
                f"{method} {path} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-length: 0\r\n"
                f"connection: close\r\n\r\n".encode()
            )
            await writer.drain()
            data = await reader.read()
        finally:
            writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        parts = head.split(b" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise OSError(f"malformed HTTP response from {host}:{port}{path}")
        return int(parts[1]), body

    try:
        return await asyncio.wait_for(exchange(), timeout)
    except TimeoutError:
        raise OSError(f"{method} http://{host}:{port}{path} timed out after {timeout}s") from None


class HttpProxyAdmin:
    def __init__(self, host: str, port: int, timeout: float = 2.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout

    async def post(self, path: str) -> int:
        status, _ = await http_request(self.host, self.port, "POST", path, self.timeout)
        return status

    async def ready(self) -> bool:
        status, _ = await http_request(self.host, self.port, "GET", "/ready", self.timeout)
        return status == 200
