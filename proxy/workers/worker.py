"""One worker process of ``--concurrency N`` (started by ``proxy.workers.pool``, entry
``python -m proxy.workers``).

The worker is a whole proxy (``proxy.server.Server`` in the "worker" role) without admin and without
a control-plane connection: its listeners bind with SO_REUSEPORT next to the other workers', and its
config changes come from the main process as ``DeltaDiscoveryResponse`` frames that ``FeedClient``
hands to the very same xDS handlers a single process uses (one batch at a time, in the order the
main accepted them). SDS secrets go straight to its ``SecretManager``. It dies with the main process
(PR_SET_PDEATHSIG, and end-of-file on the socket).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import socket
import sys

from isthmus import log as isthmus_log
from isthmus.log import event
from proxy.workers import protocol
from proxy.xds import api

log = logging.getLogger("proxy.workers.worker")

PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """SIGKILL this process when its parent dies (Linux), and exit now if it already has."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - not Linux: the socket's EOF still stops us
        pass
    if os.getppid() != parent_pid:
        os._exit(1)


class FedSdsClient:
    """Stands in for an SDS stream in a worker: the main process owns SDS and forwards secrets."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


class FeedClient:
    """The worker's ``XdsClientApi``: batches arrive from the main process, already accepted there;
    each is applied by its type's handler, strictly in order, and answered (ACK frame) when done."""

    connected = True

    def __init__(self, send) -> None:
        self._send = send
        self.handlers: dict[str, object] = {}
        self._queue: asyncio.Queue = asyncio.Queue()
        self._task: asyncio.Task | None = None

    def register(self, handler) -> None:
        self.handlers[handler.type_url] = handler

    def set_interest(self, type_url: str, names: set[str]) -> None:
        """The main process subscribes; a worker's interest follows the same config and is not sent."""

    def enqueue_update(self, nonce: str, update: api.ResourceUpdate) -> None:
        self._queue.put_nowait(("update", nonce, update))

    def enqueue_fetch_timeout(self, type_url: str) -> None:
        self._queue.put_nowait(("fetch_timeout", type_url, None))

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        while True:
            kind, key, update = await self._queue.get()
            if kind == "fetch_timeout":
                h = self.handlers.get(key)
                if h is not None and not getattr(getattr(h, "initialized", None), "done", False):
                    h.on_fetch_timeout()
                continue
            h = self.handlers.get(update.type_url)
            error = None
            if h is not None:
                try:
                    await h.on_update(update)
                except Exception as e:  # noqa: BLE001 - reported to the main process
                    error = str(e) or type(e).__name__
                    event(log, logging.ERROR, "worker.update_failed", type=update.type_url, error=error)
            self._send(protocol.encode_ack(key, update.type_url, error))


class WorkerRuntime:
    def __init__(self, sock: socket.socket, index: int) -> None:
        self.sock = sock
        self.index = index
        self.server = None
        self.feed: FeedClient | None = None
        self.writer: asyncio.StreamWriter | None = None
        self._pending: list[tuple[int, bytes]] = []

    def send(self, data: bytes) -> None:
        if self.writer is not None and not self.writer.is_closing():
            self.writer.write(data)

    async def run(self) -> int:
        from proxy.options import Options
        from proxy.server import Server

        reader, self.writer = await asyncio.open_unix_connection(sock=self.sock)
        frames = protocol.FrameReader()
        bootstrap_bytes, init = None, None
        while bootstrap_bytes is None or init is None:
            data = await reader.read(1 << 16)
            if not data:
                return 1
            for kind, payload in frames.feed(data):
                if kind == protocol.BOOTSTRAP:
                    bootstrap_bytes = payload
                elif kind == protocol.JSON and init is None:
                    init = protocol.json.loads(payload)
                else:
                    self._pending.append((kind, payload))
        from envoy.config.bootstrap.v3 import bootstrap_pb2

        from proxy.config.registry import load_builtin_extensions

        load_builtin_extensions()
        bootstrap = bootstrap_pb2.Bootstrap()
        bootstrap.ParseFromString(bootstrap_bytes)
        opts = init.get("options", {})
        options = Options(
            mode="serve",
            concurrency=1,
            log_level=opts.get("log_level", "info"),
            drain_time_s=int(opts.get("drain_time_s", 600)),
        )
        self.server = server = Server(bootstrap, options, role="worker")
        if server.xds is not None:
            self.feed = FeedClient(self.send)
            server.xds_client = self.feed
        for kind, payload in self._pending:
            self._on_frame(kind, payload)
        self._pending.clear()
        read_task = asyncio.get_running_loop().create_task(self._read(reader, frames))
        await server.start()
        server.freeze_heap()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, server._on_signal)
        self.send(protocol.json_frame({"op": "ready", "pid": os.getpid(), "index": self.index}))
        event(log, logging.INFO, "worker.ready", index=self.index, pid=os.getpid())
        assert server._stopped is not None
        await server._stopped.wait()
        read_task.cancel()
        return 0

    async def _read(self, reader: asyncio.StreamReader, frames: protocol.FrameReader) -> None:
        while True:
            data = await reader.read(1 << 16)
            if not data:  # the main process is gone: stop at once
                event(log, logging.WARNING, "worker.main_gone", index=self.index)
                if self.server is not None:
                    self.server.shutdown(drain=False)
                    self.server.shutdown(drain=False)
                return
            for kind, payload in frames.feed(data):
                self._on_frame(kind, payload)

    def _on_frame(self, kind: int, payload: bytes) -> None:
        server = self.server
        if kind == protocol.XDS:
            nonce, update = protocol.decode_change(payload)
            if update.type_url == api.SECRET:
                for name, secret in update.resources.items():
                    server.secret_manager.update(name, [secret], update.versions.get(name, ""))
                self.send(protocol.encode_ack(nonce, update.type_url))
            elif self.feed is not None:
                self.feed.enqueue_update(nonce, update)
            else:
                self.send(protocol.encode_ack(nonce, update.type_url))
            return
        if kind != protocol.JSON:
            return
        msg = protocol.json.loads(payload)
        op = msg.get("op")
        if op == "stats":
            from proxy.stats.merge import snapshot

            stats = snapshot(server.stats)
            stats["hosts"] = host_stats(server.cluster_manager)
            reply = {"op": "stats", "id": msg.get("id"), "pid": os.getpid(), "stats": stats}
            self.send(protocol.json_frame(reply))
        elif op == "fetch_timeout" and self.feed is not None:
            self.feed.enqueue_fetch_timeout(msg.get("type_url", ""))
        elif op == "shutdown":
            server.shutdown(drain=bool(msg.get("drain", True)))
        elif op == "healthcheck":
            server.healthcheck_failed = bool(msg.get("failed"))
        elif op == "drain":
            drain_listeners(server, bool(msg.get("inbound_only")), bool(msg.get("graceful")))


def host_stats(cluster_manager) -> dict[str, dict[str, dict[str, int]]]:
    """cluster -> host address -> that host's counters and gauges (for admin /clusters)."""
    from proxy.admin.handlers import cluster_hosts

    out: dict[str, dict[str, dict[str, int]]] = {}
    for name, cluster in getattr(cluster_manager, "clusters", {}).items():
        hosts = {}
        for host in cluster_hosts(cluster):
            stats = getattr(host, "stats", None)
            if stats is not None and hasattr(stats, "as_dict"):
                hosts[host.address_str] = stats.as_dict()
        if hosts:
            out[name] = hosts
    return out


def drain_listeners(server, inbound_only: bool, graceful: bool) -> None:
    """What admin's /drain_listeners does, in a worker."""
    server.start_drain(inbound_only=inbound_only)
    targets = [
        listener
        for listener in server.listener_manager
        if not inbound_only or getattr(listener.proto, "traffic_direction", 0) == 1
    ]

    def stop_accepting() -> None:
        for listener in targets:
            listener.stop_accepting()

    if graceful:
        asyncio.get_running_loop().call_later(server.options.drain_time_s, stop_accepting)
    else:
        stop_accepting()


def main(fd: int, parent_pid: int, index: int, log_level: str) -> int:
    die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides when workers stop
    isthmus_log.setup("proxy", log_level)
    sock = socket.socket(fileno=fd)
    from proxy.server import raise_fd_limit

    raise_fd_limit()
    runtime = WorkerRuntime(sock, index)
    try:
        import uvloop

        return uvloop.run(runtime.run())
    except OSError as e:
        print(f"error: worker {index}: {e.strerror or e}", file=sys.stderr)
        return 1
