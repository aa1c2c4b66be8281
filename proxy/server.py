"""The running proxy: assembles stats, clusters, listeners and admin from a Bootstrap.

``run(options)`` is the process entry (called by ``proxy.__main__``): it loads the configuration,
validates it (``--mode validate``) or serves on uvloop until SIGTERM/SIGINT, then drains.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import resource
import signal
import sys
import time
from typing import Any

from isthmus import log as isthmus_log
from isthmus.log import event
from proxy.config.bootstrap import load_bootstrap
from proxy.config.context import FactoryContext
from proxy.config.errors import ConfigError
from proxy.core.listener import ListenerManager
from proxy.options import Options
from proxy.stats.store import Store
from proxy.tls.secrets import SecretManager
from proxy.xds.config import ads_config_from_bootstrap
from proxy.xds.handlers import XdsHandlers

log = logging.getLogger("proxy.server")

VERSION = "isthmus-proxy/0.1.0"
SECRETS_INITIAL_FETCH_TIMEOUT = 15.0  # Envoy's initial_fetch_timeout default


class ServerState(enum.IntEnum):
    """Envoy's server.state gauge values."""

    LIVE = 0
    DRAINING = 1
    PRE_INITIALIZING = 2
    INITIALIZING = 3


class _NoClusters:
    """Stands in until proxy.upstream's ClusterManager exists: no clusters at all."""

    def __init__(self) -> None:
        self.clusters: dict[str, Any] = {}

    def get(self, name: str):
        return None

    def __iter__(self):
        return iter(())


def _make_cluster_manager(clusters, ctx: FactoryContext):
    try:
        from proxy.upstream.cluster_manager import ClusterManager
    except ModuleNotFoundError as e:
        if e.name not in ("proxy.upstream.cluster_manager",):
            raise
        if len(clusters):
            raise ConfigError(
                "static_resources.clusters",
                "clusters are not supported by this build (proxy.upstream is missing)",
            ) from None
        return _NoClusters()
    return ClusterManager.from_protos(clusters, ctx, "static_resources.clusters")


def raise_fd_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit, as a proxy with many sockets needs."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft, hard


class Server:
    """Everything the proxy runs. Building it compiles the whole configuration (that is what
    ``--mode validate`` does); ``start()`` binds sockets and goes LIVE."""

    def __init__(self, bootstrap, options: Options | None = None, role: str = "single") -> None:
        """`role`: "single" (one process, the default), or for ``--concurrency N`` "main" (xDS, SDS
        and admin; its listeners only reserve their addresses) or "worker" (serves; config comes from
        the main process, see ``proxy.workers``)."""
        self.options = options or Options()
        self.role = role
        self.bootstrap = bootstrap
        self.start_time = time.time()
        self.stats = Store()
        self._state = ServerState.PRE_INITIALIZING
        self._state_gauge = self.stats.gauge("server.state")
        self._state_gauge.set(int(self._state))
        self.stats.gauge("server.live").set(0)
        self.stats.gauge("server.concurrency").set(self.options.concurrency if role == "main" else 1)
        self._healthcheck_failed = False
        self.workers = None  # proxy.workers.pool.WorkerPool in the main process
        self.heap = None  # proxy.heap.HeapFreezer once freeze_heap() ran
        self.ctx = FactoryContext(stats=self.stats, server=self)
        if role != "single":
            self.ctx.extra["listen_mode"] = "reserve" if role == "main" else "worker"
        # Before listeners and clusters: their TLS socket factories watch its secrets.
        if role == "worker":
            from proxy.workers.worker import FedSdsClient

            sr = bootstrap.static_resources
            node = bootstrap.node if bootstrap.HasField("node") else None
            self.secret_manager = SecretManager(sr.secrets, sr.clusters, node, client_factory=FedSdsClient)
        else:
            self.secret_manager = SecretManager.from_bootstrap(bootstrap)
        self.ctx.extra["secret_manager"] = self.secret_manager
        self.cluster_manager = _make_cluster_manager(bootstrap.static_resources.clusters, self.ctx)
        self.ctx.cluster_manager = self.cluster_manager
        self.ads_config = ads_config_from_bootstrap(bootstrap)
        self.xds: XdsHandlers | None = None
        self.xds_client = None
        if self.ads_config is not None:
            # A worker's xDS update stats would repeat the main's: they go to a store nobody reads.
            xds_stats = Store() if role == "worker" else self.stats
            self.xds = XdsHandlers(self.cluster_manager, lambda: self.listener_manager, xds_stats)
            self.ctx.extra["rds_provider_factory"] = self.xds.rds.provider_factory
            with self.xds.rds.collect() as static_route_names:
                self.listener_manager = ListenerManager(bootstrap.static_resources.listeners, self.ctx)
            for listener in self.listener_manager:
                listener.rds_names = set(static_route_names)
        else:
            self._reject_eds_without_ads(bootstrap)
            self.listener_manager = ListenerManager(bootstrap.static_resources.listeners, self.ctx)
        self.listener_manager.drain_time = float(self.options.drain_time_s)
        if role == "main":
            from proxy.workers.pool import WorkerPool

            self.workers = WorkerPool(self, self.options.concurrency)
            self._forward_secrets()
        self.admin = None
        self._stopped: asyncio.Event | None = None
        self._shutdown_task: asyncio.Task | None = None

    @staticmethod
    def _reject_eds_without_ads(bootstrap) -> None:
        for i, c in enumerate(bootstrap.static_resources.clusters):
            if c.type == c.EDS:
                raise ConfigError(
                    f"static_resources.clusters[{i}].type",
                    "an EDS cluster needs dynamic_resources.ads_config (its endpoints come over ADS)",
                )

    def _forward_secrets(self) -> None:
        """Main process: every SDS secret it accepts also goes to the workers."""
        sm, pool = self.secret_manager, self.workers
        accept = sm.update

        def update(name: str, secrets, version_info: str = "") -> None:
            accept(name, secrets, version_info)  # ConfigError: NACKed, nothing forwarded
            found = [s for s in secrets if s.name == name]
            if found:
                pool.publish_secret(name, found[0], version_info)

        sm.update = update

    # ---- state -------------------------------------------------------------------------------

    @property
    def state(self) -> ServerState:
        """With workers, a LIVE main reports INITIALIZING while a worker is (re)starting."""
        if self._state == ServerState.LIVE and self.workers is not None and not self.workers.all_ready():
            return ServerState.INITIALIZING
        return self._state

    @property
    def healthcheck_failed(self) -> bool:
        return self._healthcheck_failed

    @healthcheck_failed.setter
    def healthcheck_failed(self, failed: bool) -> None:
        self._healthcheck_failed = failed
        if self.workers is not None:
            self.workers.broadcast({"op": "healthcheck", "failed": failed})

    @property
    def draining(self) -> bool:
        return self.state == ServerState.DRAINING

    @property
    def live(self) -> bool:
        return self.state == ServerState.LIVE

    @property
    def node(self):
        return self.bootstrap.node

    def _set_state(self, state: ServerState) -> None:
        self._state = state
        self._state_gauge.set(int(state))
        self.stats.gauge("server.live").set(1 if state == ServerState.LIVE else 0)

    def uptime(self) -> float:
        return time.time() - self.start_time

    # ---- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._stopped = asyncio.Event()
        self._set_state(ServerState.INITIALIZING)
        # Bind every socket first: a port in use fails startup naming the address.
        self.listener_manager.bind_all()
        await self._start_admin()
        self.secret_manager.start()
        init = getattr(self.cluster_manager, "start", None)
        if init is not None:
            res = init()
            if asyncio.iscoroutine(res):
                await res
        await self._wait_static_secrets()
        await self.listener_manager.start()
        if self.xds is not None:
            await self._start_xds()
        if self.workers is not None:
            await self.workers.start()
        self._set_state(ServerState.LIVE)
        event(log, logging.INFO, "server.live", listeners=len(self.listener_manager.listeners))

    async def _wait_static_secrets(self) -> None:
        """Envoy's init manager: static listeners and clusters with SDS secrets wait for them (at most
        SECRETS_INITIAL_FETCH_TIMEOUT) before the server goes LIVE. A chain still without its secrets
        then holds new connections until they arrive (proxy.core.listener)."""
        factories = [f for listener in self.listener_manager for f in listener.tls_factories()]
        for cluster in getattr(self.cluster_manager, "clusters", {}).values():
            if getattr(cluster, "transport_socket", None) is not None:
                factories.append(cluster.transport_socket)
        waiting = [f for f in factories if not f.ready]
        if not waiting:
            return
        try:
            async with asyncio.timeout(SECRETS_INITIAL_FETCH_TIMEOUT):
                await asyncio.gather(*(f.wait_ready() for f in waiting))
        except TimeoutError:
            missing = sorted({f.path for f in waiting if not f.ready})
            event(log, logging.WARNING, "sds.initial_fetch_timeout", transport_sockets=missing)

    async def _start_xds(self) -> None:
        """Connect to the control plane and wait, as Envoy does, for the initial CDS and LDS fetch
        (clusters and listeners warmed) or their initial_fetch_timeout; then the server goes LIVE.
        Losing the control plane later changes nothing here: the last good config keeps serving."""
        from proxy.xds.client import XdsClient

        assert self.xds is not None and self.ads_config is not None
        if self.role == "worker":  # proxy.workers.worker.FeedClient, set before start()
            client = self.xds_client
        else:
            client = self.xds_client = XdsClient(self.bootstrap.node, self.ads_config, self.stats)
        if self.workers is not None:
            from proxy.workers.pool import ForwardingClient

            client = ForwardingClient(client, self.workers)
        self.xds.attach(client, lds=self.ads_config.lds, cds=self.ads_config.cds)
        self.xds.refresh_interest()
        await client.start()
        event(log, logging.INFO, "xds.started", target=self.ads_config.target, delta=self.ads_config.delta)
        await self.xds.wait_initialized()

    async def _start_admin(self) -> None:
        if not self.bootstrap.HasField("admin") or not self.bootstrap.admin.HasField("address"):
            return
        sa = self.bootstrap.admin.address.socket_address
        host, port = sa.address or "127.0.0.1", sa.port_value
        try:
            from proxy.admin.server import AdminServer
        except ModuleNotFoundError as e:
            if e.name not in ("proxy.admin.server",):
                raise
            AdminServer = _MinimalAdmin
        self.admin = AdminServer(self, host, port)
        try:
            await self.admin.start()
        except OSError as e:
            raise OSError(e.errno, f"cannot bind admin to {host}:{port}: {e.strerror or e}") from None
        event(log, logging.INFO, "admin.started", address=f"{host}:{port}")

    def start_drain(self, inbound_only: bool = False, graceful: bool = False) -> None:
        """/drain_listeners: stop accepting and let connections finish (does not exit)."""
        if self.workers is not None:
            self.workers.broadcast({"op": "drain", "inbound_only": inbound_only, "graceful": graceful})
        self.listener_manager.start_drain(inbound_only=inbound_only)
        if not inbound_only:
            self._set_state(ServerState.DRAINING)

    def shutdown(self, drain: bool = True) -> None:
        """Begin a graceful exit (SIGTERM, /quitquitquit): drain listeners, wait, stop."""
        if self._shutdown_task is not None:
            if not drain:  # second signal: stop waiting
                self.listener_manager.abort_all()
                if self.workers is not None:
                    self.workers.abort()
            return
        self._shutdown_task = asyncio.get_running_loop().create_task(self._shutdown(drain))

    async def _shutdown(self, drain: bool) -> None:
        event(log, logging.INFO, "server.shutdown", drain=drain, drain_time_s=self.options.drain_time_s)
        self._set_state(ServerState.DRAINING)
        self.listener_manager.start_drain()
        self.listener_manager.stop_accepting()
        if self.workers is not None:
            await self.workers.stop(drain, (self.options.drain_time_s if drain else 0) + 5.0)
        if drain:
            done = await self.listener_manager.wait_connections_closed(self.options.drain_time_s)
            if not done:
                event(
                    log, logging.INFO, "server.drain_timeout", open=len(self.listener_manager.connections())
                )
        self.listener_manager.abort_all()
        if self.xds_client is not None:
            await self.xds_client.stop()
        stop = getattr(self.cluster_manager, "close", None) or getattr(self.cluster_manager, "stop", None)
        if stop is not None:
            res = stop()
            if asyncio.iscoroutine(res):
                await res
        await self.secret_manager.stop()
        if self.admin is not None:
            await self.admin.stop()
        loggers = sys.modules.get("proxy.accesslog.loggers")
        if loggers is not None:
            loggers.flush_all()
        assert self._stopped is not None
        self._stopped.set()

    def freeze_heap(self) -> None:
        """Process-wide, once LIVE: keep the start-up heap out of the GC's full collections, thawed
        by every xDS update until changes settle (proxy.heap). Called by the process entry points, not
        by start(): an in-process test server must not freeze the test runner's heap."""
        from proxy.heap import HeapFreezer

        self.heap = HeapFreezer(asyncio.get_running_loop())
        if self.xds is not None:
            self.xds.on_change = self.heap.thaw
        self.heap.freeze_now()

    async def serve(self) -> None:
        await self.start()
        self.freeze_heap()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal)
        assert self._stopped is not None
        await self._stopped.wait()
        event(log, logging.INFO, "server.exited")

    def _on_signal(self) -> None:
        self.shutdown(drain=self._shutdown_task is None)

    # ---- stats over workers (admin) ----------------------------------------------------------

    async def collect_worker_stats(self) -> None:
        """Main process: fetch every worker's stats (admin calls this before a /stats answer)."""
        if self.workers is not None:
            await self.workers.collect_stats()

    def worker_host_stats(self, cluster: str, address: str) -> dict[str, int]:
        """Main process: an upstream host's stats in the workers (admin /clusters adds them)."""
        return self.workers.host_stats(cluster, address) if self.workers is not None else {}

    def stats_for_export(self) -> Store:
        """What /stats shows: this process's stats, plus the workers' summed (``proxy.stats.merge``)."""
        if self.workers is None:
            return self.stats
        return self.workers.merged_stats(self.stats)


class _MinimalAdmin:
    """Placeholder admin (GET /ready, POST /quitquitquit) until proxy.admin.server lands."""

    def __init__(self, server: Server, host: str, port: int) -> None:
        self.server = server
        self.host, self.port = host, port
        self._srv: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._srv = await asyncio.start_server(self._handle, self.host, self.port, reuse_address=True)

    async def stop(self) -> None:
        if self._srv is not None:
            self._srv.close()
            self._srv = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass
            parts = line.decode("latin-1").split()
            method, path = (parts[0], parts[1].split("?")[0]) if len(parts) >= 2 else ("", "")
            if path == "/ready" and method == "GET":
                live = self.server.live
                status, body = (200, "LIVE\n") if live else (503, self.server.state.name + "\n")
            elif path == "/quitquitquit" and method == "POST":
                status, body = 200, "OK\n"
                self.server.shutdown(drain=False)
            else:
                status, body = 404, "not found\n"
            reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[status]
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\ncontent-length: {len(body)}\r\n"
                f"connection: close\r\n\r\n{body}".encode()
            )
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


# --------------------------------------------------------------------------------------------------
# Process entry
# --------------------------------------------------------------------------------------------------


def _config_name(options: Options) -> str:
    return options.config_path or "--config-yaml"


def run(options: Options) -> int:
    isthmus_log.setup("proxy", options.log_level)
    role = "main" if options.concurrency > 1 else "single"
    try:
        bootstrap = load_bootstrap(
            options.config_path, options.config_yaml, options.service_node, options.service_cluster
        )
        if options.mode == "validate":
            Server(bootstrap, options)
            print(f"configuration '{_config_name(options)}' OK")
            return 0
        server = Server(bootstrap, options, role=role)
    except ConfigError as e:
        print(f"error initializing configuration '{_config_name(options)}': {e}", file=sys.stderr)
        return 1
    soft, _ = raise_fd_limit()
    event(log, logging.DEBUG, "rlimit.nofile", soft=soft)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        uvloop = None
    try:
        if uvloop is not None:
            uvloop.run(server.serve())
        else:
            asyncio.run(server.serve())
    except OSError as e:
        print(f"error: {e.strerror or e}", file=sys.stderr)
        return 1
    except Exception as e:
        from proxy.workers.pool import WorkerStartError

        if not isinstance(e, WorkerStartError):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


__all__ = ["Server", "ServerState", "run", "os"]
