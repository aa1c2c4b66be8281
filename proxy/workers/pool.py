"""The main process's side of ``--concurrency N``: start N workers, keep them configured, restart
the ones that die, collect their stats, stop them.

The main process validates every xDS batch with its own handlers (a NACK never reaches a worker),
records the accepted batch in a ``Snapshot`` and forwards it to every worker; the xDS client ACKs
only once every worker has applied it. A worker that starts (or restarts) first gets the bootstrap,
then the whole snapshot. Workers are started with ``subprocess`` (a fresh interpreter: forking a
process that runs gRPC threads is unsafe) and the worker end of a socket pair.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import socket
import subprocess
import sys
import time

from isthmus.log import event
from proxy.stats import merge
from proxy.workers import protocol
from proxy.xds import api

log = logging.getLogger("proxy.workers")

ACK_TIMEOUT_S = 30.0
STATS_TIMEOUT_S = 2.0
BACKOFF_BASE_S = 0.1
BACKOFF_MAX_S = 5.0
STABLE_AFTER_S = 10.0


class WorkerStartError(Exception):
    pass


class Worker:
    """One worker slot: the current process, its socket and what is waiting on it."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: subprocess.Popen | None = None
        self.pid = 0
        self.ready = False
        self.restarts = 0
        self.writer: asyncio.StreamWriter | None = None
        self.acks: dict[str, asyncio.Future] = {}
        self.stats_waiters: dict[int, asyncio.Future] = {}
        self.last_stats: dict | None = None
        self.ready_event = asyncio.Event()
        self.started_at = 0.0

    @property
    def connected(self) -> bool:
        return self.writer is not None and not self.writer.is_closing()

    def send(self, data: bytes) -> None:
        if self.connected:
            self.writer.write(data)  # type: ignore[union-attr]

    def info(self) -> dict:
        return {"index": self.index, "pid": self.pid, "ready": self.ready, "restarts": self.restarts}


class WorkerPool:
    def __init__(self, server, count: int) -> None:
        self.server = server
        self.count = count
        self.workers = [Worker(i) for i in range(count)]
        self.snapshot = protocol.Snapshot()
        self.timed_out: set[str] = set()
        self.stopping = False
        self._nonces = itertools.count(1)
        self._stats_ids = itertools.count(1)
        self._tasks: list[asyncio.Task] = []
        self._bootstrap = b""  # set by start(), once the main has bound its listeners
        stats = server.stats
        self._restarted = stats.counter("server.worker_restarts")
        self._rejected = stats.counter("server.worker_config_rejected")

    # ---- lifecycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every worker and wait until all are ready; a worker that exits before it is ready
        fails the start (its own error is on stderr)."""
        self._bootstrap = worker_bootstrap(self.server.bootstrap, self.server.listener_manager)
        loop = asyncio.get_running_loop()
        for w in self.workers:
            self._tasks.append(loop.create_task(self._supervise(w, first=True)))
        ready = loop.create_task(self._all_ready())
        while True:
            done, _ = await asyncio.wait([ready, *self._tasks], return_when=asyncio.FIRST_COMPLETED)
            if ready in done or self.stopping:
                return
            for t in done:
                if not t.cancelled() and t.exception() is not None:
                    ready.cancel()
                    raise t.exception()  # type: ignore[misc]

    async def _all_ready(self) -> None:
        for w in self.workers:
            await w.ready_event.wait()

    def all_ready(self) -> bool:
        return all(w.ready for w in self.workers)

    async def _supervise(self, w: Worker, first: bool) -> None:
        failures = 0
        while not self.stopping:
            code = await self._run_once(w)
            if self.stopping:
                return
            if first and not w.ready_event.is_set():
                raise WorkerStartError(f"worker {w.index} exited with code {code} before it was ready")
            lived = time.monotonic() - w.started_at
            failures = 0 if lived > STABLE_AFTER_S else failures + 1
            delay = min(BACKOFF_MAX_S, BACKOFF_BASE_S * (2 ** max(0, failures - 1)))
            event(
                log, logging.WARNING, "worker.exited", index=w.index, pid=w.pid, code=code, restart_in_s=delay
            )
            await asyncio.sleep(delay)
            if self.stopping:
                return
            w.restarts += 1
            self._restarted.inc()

    def _spawn(self, w: Worker) -> socket.socket:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        args = [
            sys.executable, "-m", "proxy.workers", "--fd", str(child.fileno()),
            "--parent-pid", str(os.getpid()), "--index", str(w.index), "-l", self.server.options.log_level,
        ]  # fmt: skip
        try:
            w.proc = subprocess.Popen(args, pass_fds=(child.fileno(),), env=env)
        finally:
            child.close()
        w.pid = w.proc.pid
        w.started_at = time.monotonic()
        return parent

    async def _run_once(self, w: Worker) -> int:
        sock = self._spawn(w)
        reader, writer = await asyncio.open_unix_connection(sock=sock)
        w.writer = writer
        w.ready = False
        # Bootstrap, options, then the whole current config: written in one go, so that every change
        # published later reaches this worker after its snapshot.
        opts = self.server.options
        init = {"op": "init", "options": {"log_level": opts.log_level, "drain_time_s": opts.drain_time_s}}
        w.send(protocol.frame(protocol.BOOTSTRAP, self._bootstrap))
        w.send(protocol.json_frame(init))
        for type_url, version, resources in self.snapshot.changes():
            w.send(protocol.encode_change(type_url, version, resources, (), f"s{next(self._nonces)}"))
        for type_url in sorted(self.timed_out):
            w.send(protocol.json_frame({"op": "fetch_timeout", "type_url": type_url}))
        if self.server.healthcheck_failed:
            w.send(protocol.json_frame({"op": "healthcheck", "failed": True}))
        event(log, logging.INFO, "worker.started", index=w.index, pid=w.pid)
        frames = protocol.FrameReader()
        try:
            while True:
                data = await reader.read(1 << 16)
                if not data:
                    break
                for kind, payload in frames.feed(data):
                    self._on_frame(w, kind, payload)
        except (ConnectionError, protocol.ProtocolError) as e:
            level = logging.INFO if self.stopping else logging.ERROR
            event(log, level, "worker.channel_failed", index=w.index, error=str(e))
        finally:
            w.ready = False
            w.writer = None
            writer.close()
            for fut in list(w.acks.values()) + list(w.stats_waiters.values()):
                if not fut.done():
                    fut.set_result(None)
            w.acks.clear()
            w.stats_waiters.clear()
        return await self._reap(w)

    async def _reap(self, w: Worker) -> int:
        proc = w.proc
        assert proc is not None
        deadline = time.monotonic() + 5.0
        while proc.poll() is None:
            if time.monotonic() > deadline:
                proc.kill()
                deadline = time.monotonic() + 5.0
            await asyncio.sleep(0.02)
        return proc.returncode

    def _on_frame(self, w: Worker, kind: int, payload: bytes) -> None:
        if kind == protocol.ACK:
            nonce, error = protocol.decode_ack(payload)
            fut = w.acks.pop(nonce, None)
            if error is not None:
                self._rejected.inc()
                event(log, logging.ERROR, "worker.config_rejected", index=w.index, pid=w.pid, error=error)
                # The worker's config no longer matches the main's: start it again from the snapshot.
                if w.proc is not None and w.proc.poll() is None:
                    w.proc.kill()
            if fut is not None and not fut.done():
                fut.set_result(error)
            return
        if kind != protocol.JSON:
            return
        msg = json.loads(payload)
        op = msg.get("op")
        if op == "ready":
            w.ready = True
            w.ready_event.set()
            event(log, logging.INFO, "worker.ready", index=w.index, pid=w.pid)
        elif op == "stats":
            w.last_stats = msg.get("stats")
            fut = w.stats_waiters.pop(msg.get("id"), None)
            if fut is not None and not fut.done():
                fut.set_result(w.last_stats)

    async def stop(self, drain: bool, timeout: float) -> None:
        """Tell every worker to stop (draining or not), wait for them to exit, kill what remains."""
        self.stopping = True
        self.broadcast({"op": "shutdown", "drain": drain})
        deadline = time.monotonic() + timeout
        while any(w.proc is not None and w.proc.poll() is None for w in self.workers):
            if time.monotonic() > deadline:
                for w in self.workers:
                    if w.proc is not None and w.proc.poll() is None:
                        event(log, logging.WARNING, "worker.killed", index=w.index, pid=w.pid)
                        w.proc.kill()
                deadline = time.monotonic() + 5.0
            await asyncio.sleep(0.02)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def abort(self) -> None:
        self.broadcast({"op": "shutdown", "drain": False})

    # ---- config ---------------------------------------------------------------------------------------

    def broadcast(self, msg: dict) -> None:
        data = protocol.json_frame(msg)
        for w in self.workers:
            w.send(data)

    async def publish(self, update: api.ResourceUpdate) -> None:
        """An accepted batch: record it and have every connected worker apply it (wait for them)."""
        changed, removed = self.snapshot.apply(update)
        self.timed_out.discard(update.type_url)
        nonce = f"u{next(self._nonces)}"
        data = protocol.encode_change(update.type_url, update.version_info, changed, removed, nonce)
        waits = []
        loop = asyncio.get_running_loop()
        for w in self.workers:
            if w.connected:
                fut = w.acks[nonce] = loop.create_future()
                w.send(data)
                waits.append(fut)
        if not waits:
            return
        done, pending = await asyncio.wait(waits, timeout=ACK_TIMEOUT_S)
        if pending:
            event(log, logging.ERROR, "worker.ack_timeout", type=update.type_url, waiting=len(pending))

    def publish_secret(self, name: str, secret, version: str) -> None:
        self.snapshot.set_secret(secret, version)
        data = protocol.encode_change(
            api.SECRET, version, {name: (secret, version)}, (), f"k{next(self._nonces)}"
        )
        for w in self.workers:
            w.send(data)

    def publish_fetch_timeout(self, type_url: str) -> None:
        self.timed_out.add(type_url)
        self.broadcast({"op": "fetch_timeout", "type_url": type_url})

    # ---- stats ----------------------------------------------------------------------------------------

    async def collect_stats(self, timeout: float = STATS_TIMEOUT_S) -> None:
        """Ask every connected worker for its stats; a worker that does not answer in time keeps its
        last snapshot (a dead worker's last numbers still count, as its traffic happened)."""
        loop = asyncio.get_running_loop()
        waits = []
        for w in self.workers:
            if w.connected:
                sid = next(self._stats_ids)
                fut = w.stats_waiters[sid] = loop.create_future()
                w.send(protocol.json_frame({"op": "stats", "id": sid}))
                waits.append(fut)
        if waits:
            await asyncio.wait(waits, timeout=timeout)

    def host_stats(self, cluster: str, address: str) -> dict[str, int]:
        """One upstream host's stats summed over the workers (their last snapshots)."""
        out: dict[str, int] = {}
        for w in self.workers:
            row = ((w.last_stats or {}).get("hosts") or {}).get(cluster, {}).get(address)
            for k, v in (row or {}).items():
                out[k] = out.get(k, 0) + v
        return out

    def merged_stats(self, main_store):
        return merge.merge(main_store, [w.last_stats for w in self.workers if w.last_stats is not None])


def worker_bootstrap(bootstrap, listener_manager) -> bytes:
    """The bootstrap a worker gets: without admin (the main serves it), and with the port the main
    reserved for each static listener configured on port 0 (so that every worker shares it)."""
    out = type(bootstrap)()
    out.CopyFrom(bootstrap)
    out.ClearField("admin")
    bound = {
        listener.name: listener.port
        for listener in listener_manager
        if listener.name in listener_manager.static_names
    }
    for proto in out.static_resources.listeners:
        sa = proto.address.socket_address
        if sa.port_value == 0:
            name = proto.name or f"{sa.address}:0"
            if bound.get(name):
                sa.port_value = bound[name]
    return out.SerializeToString()


class ForwardingHandler:
    """Wraps one of the main's xDS handlers: what it accepts goes to every worker before the ACK."""

    def __init__(self, inner, pool: WorkerPool) -> None:
        self.inner = inner
        self.pool = pool
        self.type_url = inner.type_url
        self.wildcard = inner.wildcard

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    async def on_update(self, update: api.ResourceUpdate) -> None:
        await self.inner.on_update(update)  # raises: NACK, nothing reaches the workers
        await self.pool.publish(update)

    def on_fetch_timeout(self) -> None:
        self.inner.on_fetch_timeout()
        self.pool.publish_fetch_timeout(self.type_url)


class ForwardingClient:
    """What the main's ``XdsHandlers`` attach to: the real xDS client, with forwarding handlers."""

    def __init__(self, client, pool: WorkerPool) -> None:
        self.client = client
        self.pool = pool

    @property
    def connected(self) -> bool:
        return self.client.connected

    def register(self, handler) -> None:
        self.client.register(ForwardingHandler(handler, self.pool))

    def set_interest(self, type_url: str, names: set[str]) -> None:
        self.client.set_interest(type_url, names)

    async def start(self) -> None:
        await self.client.start()

    async def stop(self) -> None:
        await self.client.stop()
