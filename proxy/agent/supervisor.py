"""Supervise the proxy process: start it, restart it with back-off when it dies, drain it on shutdown.

Istio's pilot-agent order on SIGTERM (terminationDrainDuration): ask the proxy to drain its listeners
(``POST /drain_listeners?graceful``, ``inboundonly`` too for a sidecar so the app's own outbound calls
keep working while it finishes), wait the drain duration, then stop the proxy (``POST /quitquitquit``,
then SIGTERM, then SIGKILL if it still has not gone), then exit.

The process and the admin API come in through two small protocols (``Launcher``/``ProxyProcess`` and
``ProxyAdmin``), so the state machine is unit-tested with fakes; proxy/agent/process.py has the real ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from isthmus.log import event

log = logging.getLogger("proxy.agent.supervisor")


class ProxyProcess(Protocol):
    pid: int

    async def wait(self) -> int: ...

    def signal(self, sig: int) -> None: ...


class Launcher(Protocol):
    async def start(self) -> ProxyProcess: ...


class ProxyAdmin(Protocol):
    async def post(self, path: str) -> int:
        """POST to the proxy's admin; the HTTP status (raise OSError when unreachable)."""

    async def ready(self) -> bool:
        """GET /ready answered 200 (LIVE)."""


class State(enum.Enum):
    RUNNING = "RUNNING"  # the process is up (LIVE or not: ready() asks its admin)
    BACKOFF = "BACKOFF"  # died; waiting before the next start
    DRAINING = "DRAINING"
    STOPPED = "STOPPED"


@dataclass
class RestartBackoff:
    """Exponential back-off between restarts (pure). A proxy that stayed up `stable_after` seconds
    starts over at `initial`."""

    initial: float = 0.2
    maximum: float = 30.0
    factor: float = 2.0
    stable_after: float = 10.0
    failures: int = 0

    def next_delay(self, ran_for: float) -> float:
        if ran_for >= self.stable_after:
            self.failures = 0
        delay = min(self.initial * self.factor**self.failures, self.maximum)
        self.failures += 1
        return delay


class Supervisor:
    def __init__(
        self,
        launcher: Launcher,
        admin: ProxyAdmin,
        drain_duration: float,
        inbound_only_drain: bool = True,
        backoff: RestartBackoff | None = None,
        exit_grace: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.launcher = launcher
        self.admin = admin
        self.drain_duration = drain_duration
        self.inbound_only_drain = inbound_only_drain
        self.backoff = backoff or RestartBackoff()
        self.exit_grace = exit_grace
        self.clock = clock
        self.state = State.STOPPED
        self.process: ProxyProcess | None = None
        self.starts = 0
        self.last_exit_code: int | None = None
        self._stopping = asyncio.Event()
        self._exited = asyncio.Event()  # set while no proxy process is alive

    # ---- what the status server reads -----------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def restarts(self) -> int:
        return max(0, self.starts - 1)

    async def ready(self) -> bool:
        """The agent is ready when its proxy runs and says LIVE (Istio: readiness mirrors Envoy's)."""
        if self.process is None or self.state != State.RUNNING:
            return False
        try:
            return await self.admin.ready()
        except OSError:
            return False

    def snapshot(self) -> dict:
        return {
            "state": self.state.value,
            "proxy_pid": self.pid,
            "starts": self.starts,
            "restarts": self.restarts,
            "last_exit_code": self.last_exit_code,
        }

    # ---- lifecycle ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Start the proxy and keep it running until stop() is called; returns once it has stopped."""
        while not self._stopping.is_set():
            started = self.clock()
            try:
                self.process = await self.launcher.start()
            except OSError as e:
                event(log, logging.ERROR, "proxy.start_failed", error=str(e))
                self.process = None
            else:
                self.starts += 1
                self.state = State.RUNNING
                self._exited.clear()
                event(log, logging.INFO, "proxy.started", pid=self.process.pid, start=self.starts)
                code = await self.process.wait()
                self.last_exit_code = code
                self._exited.set()
                pid, self.process = self.process.pid, None
                if self._stopping.is_set():
                    event(log, logging.INFO, "proxy.exited", pid=pid, code=code)
                    break
                event(log, logging.WARNING, "proxy.died", pid=pid, code=code)
            delay = self.backoff.next_delay(self.clock() - started)
            self.state = State.BACKOFF
            event(log, logging.INFO, "proxy.restart_scheduled", delay=f"{delay:.2f}s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)
        self.state = State.STOPPED

    async def drain_and_stop(self) -> None:
        """Drain the running proxy for the drain duration, then stop it. No restart happens after this."""
        self._stopping.set()
        process = self.process
        if process is None:
            self.state = State.STOPPED
            return
        self.state = State.DRAINING
        path = (
            "/drain_listeners?inboundonly&graceful"
            if self.inbound_only_drain
            else "/drain_listeners?graceful"
        )
        try:
            status = await self.admin.post(path)
            event(log, logging.INFO, "proxy.draining", pid=process.pid, status=status,
                  duration=f"{self.drain_duration:g}s")  # fmt: skip
        except OSError as e:
            event(log, logging.WARNING, "proxy.drain_failed", pid=process.pid, error=str(e))
        await self._wait_exit(self.drain_duration)  # a proxy that exits by itself ends the wait early
        if not self._exited.is_set():
            with contextlib.suppress(OSError):
                await self.admin.post("/quitquitquit")
            if not await self._wait_exit(self.exit_grace):
                self.kill(15)
                if not await self._wait_exit(self.exit_grace):
                    self.kill(9)
                    await self._exited.wait()
        self.state = State.STOPPED

    def kill(self, sig: int = 9) -> None:
        """Signal the proxy now (a second SIGTERM to the agent: stop waiting for the drain)."""
        self._stopping.set()
        process = self.process
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                process.signal(sig)

    async def _wait_exit(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._exited.wait(), timeout=timeout)
        except TimeoutError:
            return False
        return True
