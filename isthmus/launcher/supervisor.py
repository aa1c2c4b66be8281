"""Runs a Topology as local processes: start in dependency order, wait for readiness, stream logs,
restart crashes with backoff, and stop everything in reverse order on SIGINT/SIGTERM.

Every child runs in its own session (so a terminal's Ctrl-C reaches only the supervisor, which then
stops the children in order), and is signalled through its process group, by the PID we started.
On Linux a child also gets SIGTERM if the supervisor itself dies without cleaning up.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TextIO

import httpx

from isthmus.log import event

from .backoff import Backoff
from .topology import Topology, Workload

log = logging.getLogger("isthmus.supervisor")
logging.getLogger("httpx").setLevel(logging.WARNING)  # readiness polls would flood the log

MESH_LOG = "mesh.log"  # in log_dir: every process's lines, as printed
COLORS = ("\033[36m", "\033[33m", "\033[35m", "\033[32m", "\033[34m", "\033[91m", "\033[96m", "\033[93m")
RESET = "\033[0m"
# A user's own proxy settings must not capture traffic between workloads; the topology says when
# a workload talks through a proxy (later: its sidecar).
PROXY_VARS = frozenset({"http_proxy", "https_proxy", "all_proxy", "no_proxy"})

try:
    _libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
except OSError:  # pragma: no cover
    _libc = None
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if _libc is not None:
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def child_env(inherited: Mapping[str, str], workload: Workload, log_level: str | None) -> dict[str, str]:
    env = {k: v for k, v in inherited.items() if k.lower() not in PROXY_VARS}
    env["PYTHONUNBUFFERED"] = "1"
    if log_level:
        env["ISTHMUS_LOG_LEVEL"] = log_level
    env.update(workload.env)
    return env


def prefix(name: str, width: int, color: str | None) -> str:
    label = f"{name:<{width}} |"
    return f"{color}{label}{RESET} " if color else f"{label} "


class Child:
    """A workload and the current process running it."""

    def __init__(self, workload: Workload, line_prefix: str) -> None:
        self.workload = workload
        self.prefix = line_prefix
        self.proc: asyncio.subprocess.Process | None = None
        self.started_at = 0.0
        self.crashes = 0
        self.ever_ready = False
        self.tasks: set[asyncio.Task] = set()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None


class Supervisor:
    def __init__(
        self,
        topology: Topology,
        *,
        python: str = sys.executable,
        out: TextIO | None = None,
        color: bool = False,
        ready_timeout: float = 30.0,
        stop_timeout: float = 5.0,
        backoff: Backoff | None = None,
        log_level: str | None = None,
        prepare: Callable[[Workload], None] | None = None,
        on_ready: Callable[[dict[str, int]], None] | None = None,
        log_dir: str | os.PathLike | None = None,
    ) -> None:
        self.topology = topology
        self.prepare = prepare  # runs before each spawn (e.g. writes a bootstrap token)
        # gets {workload: pid} once everything is ready (the state file), and again after every
        # restart from then on, so the recorded PIDs are always the running ones
        self.on_ready = on_ready
        self._recorded = False
        self.order = topology.start_order()
        self.python = python
        self.out = out or sys.stdout
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.backoff = backoff or Backoff()
        self.log_level = log_level
        # `isthmus logs` reads these: <log_dir>/<workload>.log per process (across restarts) and
        # <log_dir>/mesh.log with every line as printed (prefixed, no colour). Truncated at start.
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self._files: dict[str, TextIO] = {}
        self._width = width = max(len(w.name) for w in self.order)
        self.children = {
            w.name: Child(w, prefix(w.name, width, COLORS[i % len(COLORS)] if color else None))
            for i, w in enumerate(topology.workloads)
        }
        self._stopping: asyncio.Event | None = None
        self._signals = 0

    # -- the whole run ------------------------------------------------------------------------

    async def run(self) -> int:
        """Start everything, serve until a signal, stop everything. Returns the exit status."""
        loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)
        self._http = httpx.AsyncClient(trust_env=False, timeout=2.0)
        self._open_logs()
        status = 0
        try:
            if await self._start_all():
                self._announce()
                self._record()
                await self._stopping.wait()
            elif not self._stopping.is_set():
                status = 1
        finally:
            await self._stop_all()
            await self._http.aclose()
            for f in self._files.values():
                f.close()
            self._files.clear()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        return status

    async def _start_all(self) -> bool:
        """Start in waves: everything whose dependencies are ready starts at once. False on failure."""
        pending = list(self.order)
        ready: set[str] = set()
        while pending and not self._stopping.is_set():
            wave = [w for w in pending if all(dep in ready for dep in w.depends_on)]
            children = [self.children[w.name] for w in wave]
            for child in children:
                await self._spawn(child)
            results = await asyncio.gather(*(self._wait_ready(child) for child in children))
            if not all(results):
                return False
            ready.update(w.name for w in wave)
            pending = [w for w in pending if w.name not in ready]
        return not pending

    def _on_signal(self, sig: int) -> None:
        self._signals += 1
        event(log, logging.INFO, "supervisor.stopping", signal=signal.Signals(sig).name)
        self._stopping.set()
        if self._signals > 1:  # a second Ctrl-C: do not wait for graceful shutdowns
            for child in self.children.values():
                if child.running:
                    self._signal_group(child, signal.SIGKILL)

    def pids(self) -> dict[str, int]:
        return {name: c.proc.pid for name, c in self.children.items() if c.running}

    def _record(self) -> None:
        """Hand the current PIDs to on_ready (the state file): once start-up is done (an error then
        fails `isthmus up`), and after every restart from then on."""
        if self.on_ready is None or self._stopping.is_set():
            return
        if not self._recorded:
            self.on_ready(self.pids())
            self._recorded = True
            return
        try:
            self.on_ready(self.pids())
        except OSError as e:  # a full disk must not take the running mesh down
            event(log, logging.ERROR, "supervisor.record_failed", error=str(e))

    def _announce(self) -> None:
        entry = self.topology.get(self.topology.entry)
        self.out.write(
            self.topology.banner
            if self.topology.banner is not None
            else f"\nBookinfo is up (no sidecars yet). Open {self.topology.entry_url}\n"
        )
        self.out.write(f"  {'workload':<20} {'listens on':<22} ready check\n")
        for w in self.order:
            self.out.write(f"  {w.name:<20} {w.address + ':' + str(w.port):<22} {w.ready_url}\n")
        self.out.write("Press Ctrl-C to stop.\n\n")
        self.out.flush()
        event(log, logging.INFO, "supervisor.ready", url=self.topology.entry_url, entry=entry.name)

    # -- one process --------------------------------------------------------------------------

    async def _spawn(self, child: Child) -> None:
        w = child.workload
        if self.prepare is not None:
            self.prepare(w)
        child.proc = await asyncio.create_subprocess_exec(
            *w.argv(self.python),
            env=child_env(os.environ, w, self.log_level),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
            limit=1 << 20,
        )
        child.started_at = time.monotonic()
        event(
            log,
            logging.INFO,
            "process.started",
            workload=w.name,
            pid=child.proc.pid,
            address=f"{w.address}:{w.port}",
            command=" ".join(w.argv("python")),
        )
        pump = asyncio.create_task(self._pump(child, child.proc))
        self._track(child, asyncio.create_task(self._watch(child, child.proc, pump)))

    def _track(self, child: Child, task: asyncio.Task) -> None:
        child.tasks.add(task)
        task.add_done_callback(child.tasks.discard)

    def _open_logs(self) -> None:
        if self.log_dir is None:
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for name in [*self.children, MESH_LOG]:
            file = self.log_dir / (name if name == MESH_LOG else f"{name}.log")
            self._files[name] = open(file, "w", encoding="utf-8", buffering=1)

    async def _pump(self, child: Child, proc: asyncio.subprocess.Process) -> None:
        own = self._files.get(child.workload.name)
        mesh = self._files.get(MESH_LOG)
        plain = prefix(child.workload.name, self._width, None)
        async for line in proc.stdout:
            text = line.decode("utf-8", "replace").rstrip("\n") + "\n"
            self.out.write(child.prefix + text)
            self.out.flush()
            if own is not None and not own.closed:
                own.write(text)
                mesh.write(plain + text)

    async def _wait_ready(self, child: Child, timeout: float | None = None) -> bool:
        w = child.workload
        proc = child.proc
        deadline = time.monotonic() + (timeout or self.ready_timeout)
        while not self._stopping.is_set():
            if proc.returncode is not None:
                print(
                    f"isthmus: {w.name} exited with status {proc.returncode} before it was ready "
                    f"(its output is above)",
                    file=sys.stderr,
                )
                return False
            try:
                if (await self._http.get(w.ready_url)).status_code == 200:
                    child.ever_ready = True
                    event(
                        log,
                        logging.INFO,
                        "process.ready",
                        workload=w.name,
                        pid=proc.pid,
                        url=w.ready_url,
                        after_s=round(time.monotonic() - child.started_at, 2),
                    )
                    return True
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                print(
                    f"isthmus: {w.name} was not ready after {timeout or self.ready_timeout:g}s "
                    f"({w.ready_url} did not answer 200)",
                    file=sys.stderr,
                )
                return False
            try:
                await asyncio.wait_for(self._stopping.wait(), 0.1)
            except TimeoutError:
                pass
        return False

    async def _watch(self, child: Child, proc: asyncio.subprocess.Process, pump: asyncio.Task) -> None:
        code = await proc.wait()
        await pump
        if self._stopping.is_set():
            return
        uptime = time.monotonic() - child.started_at
        if not child.ever_ready:
            event(log, logging.ERROR, "process.exited", workload=child.workload.name, pid=proc.pid, code=code)
            return
        child.crashes = self.backoff.next_count(child.crashes, uptime)
        delay = self.backoff.delay(child.crashes)
        event(
            log,
            logging.WARNING,
            "process.crashed",
            workload=child.workload.name,
            pid=proc.pid,
            code=code,
            uptime_s=round(uptime, 2),
            restart_in_s=delay,
            consecutive_crashes=child.crashes,
        )
        try:
            await asyncio.wait_for(self._stopping.wait(), delay)
            return  # stopping: no restart
        except TimeoutError:
            pass
        await self._spawn(child)
        event(log, logging.INFO, "process.restarted", workload=child.workload.name, pid=child.proc.pid)
        if self._recorded:  # the state file names the new PID at once (status, down)
            self._record()
        await self._wait_ready(child)

    # -- stopping -----------------------------------------------------------------------------

    def _signal_group(self, child: Child, sig: int) -> None:
        # Only while our child is unreaped: its PID (= its process group id) is still ours.
        if child.running:
            try:
                os.killpg(child.proc.pid, sig)
            except ProcessLookupError:
                pass

    def stop_waves(self) -> list[list[Workload]]:
        """The start waves backwards: what depends on others stops first (the gateway, then the apps,
        then their sidecars, then the control plane); within a wave, reversed start order."""
        level: dict[str, int] = {}
        for w in self.order:  # dependencies come first in self.order
            level[w.name] = 1 + max((level[d] for d in w.depends_on), default=-1)
        waves: dict[int, list[Workload]] = {}
        for w in reversed(self.order):
            waves.setdefault(level[w.name], []).append(w)
        return [waves[k] for k in sorted(waves, reverse=True)]

    async def _stop_all(self) -> None:
        # One at a time, in the order of stop_waves. (Stopping a whole wave at once was tried: six
        # sidecars draining together overran the stop timeout and were killed.)
        self._stopping.set()
        for workload in [w for wave in self.stop_waves() for w in wave]:
            child = self.children[workload.name]
            if not child.running:
                continue
            self._signal_group(child, signal.SIGTERM)
            try:
                await asyncio.wait_for(child.proc.wait(), self.stop_timeout)
            except TimeoutError:
                event(
                    log,
                    logging.WARNING,
                    "process.kill",
                    workload=workload.name,
                    pid=child.proc.pid,
                    reason=f"still running {self.stop_timeout:g}s after SIGTERM",
                )
                self._signal_group(child, signal.SIGKILL)
                await child.proc.wait()
            event(
                log,
                logging.INFO,
                "process.stopped",
                workload=workload.name,
                pid=child.proc.pid,
                code=child.proc.returncode,
            )
        # Restart timers see the stop and return; a spawn already under way is stopped here too.
        for child in self.children.values():
            if child.tasks:
                await asyncio.gather(*child.tasks, return_exceptions=True)
            if child.running:
                self._signal_group(child, signal.SIGKILL)
                await child.proc.wait()
