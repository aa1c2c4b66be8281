"""Run mixer: load the config, then serve gRPC (policy, quota, telemetry) and HTTP on one event loop.

Everything shares one asyncio loop: the gRPC services (grpc.aio), the HTTP side (uvicorn), and the
config watcher. Reports are aggregated in memory on that loop, so no locks are needed and per-report
work never waits on the network. Quota counters live in memory or in Redis (``--redis-url``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from dataclasses import dataclass

import grpc
import uvicorn
from envoy.service.auth.v3 import external_auth_pb2_grpc
from envoy.service.ratelimit.v3 import rls_pb2_grpc
from prometheus_client import REGISTRY, CollectorRegistry, Info

from isthmus.listen import ListenError, bind_tcp, check_free
from isthmus.log import event
from mixer.adapters.accesslog import JsonLinesWriter
from mixer.adapters.prometheus import IstioMetrics
from mixer.adapters.quota import MemoryBackend, QuotaService
from mixer.config.model import ConfigError, MixerConfig
from mixer.config.watcher import ConfigHolder
from mixer.server import accesslog, http_api
from mixer.server.accesslog import AccessLogService
from mixer.server.events import QuotaUsage, RecentEvents
from mixer.server.metrics import MixerMetrics
from mixer.server.policy import AuthorizationService
from mixer.server.ratelimit import RateLimitService
from mixer.telemetry.attributes import Report, Workload
from mixer.telemetry.ingest import Ingest
from mixer.telemetry.store import TrafficStore

log = logging.getLogger("mixer")


@dataclass
class MixerOptions:
    config_path: str | None = None
    redis_url: str | None = None
    grpc_addr: tuple[str, int] = ("127.0.0.1", 9091)
    http_addr: tuple[str, int] = ("127.0.0.1", 20001)
    reload_interval: float = 0.5


class Telemetry:
    """Where every report goes: Istio's metrics, the dashboard's store, the JSON access log."""

    def __init__(self, registry: CollectorRegistry, metrics: MixerMetrics, config: MixerConfig) -> None:
        self.metrics = metrics
        self.istio = IstioMetrics(registry, config.telemetry.max_series_per_metric)
        self.store = TrafficStore(max_edges=config.telemetry.max_series_per_metric)
        self.ingest = Ingest()
        self.writer: JsonLinesWriter | None = None
        self.apply(config)

    def apply(self, config: MixerConfig) -> None:
        self.istio.max_series = config.telemetry.max_series_per_metric
        self.store.max_edges = config.telemetry.max_series_per_metric
        path = config.telemetry.access_log_path
        if self.writer is not None and self.writer.path != path:
            self.writer.close()
            self.writer = None
        if path is not None and self.writer is None:
            try:
                self.writer = JsonLinesWriter(path)
            except OSError as e:
                event(log, logging.ERROR, "accesslog.open_failed", path=path, error=str(e))

    def __call__(self, report: Report) -> None:
        """One report (tests, tools); the access-log service hands whole batches to ``http``/``tcp``."""
        self.istio.record(report)
        self.store.add(report)
        self._write([report])

    def http(self, node: Workload, entries) -> None:
        """One batch of HTTPAccessLogEntry messages from the proxy ``node``."""
        reports: list[Report] | None = [] if self.writer is not None else None
        batch = self.ingest.http(node, entries, reports)
        istio, store = self.istio, self.store
        n = 0
        for series, totals in batch.items():
            n += totals.n
            istio.record_http(series.values, totals)
            store.add_http(
                series.edge,
                totals.n,
                totals.n if series.error else 0,
                totals.n if series.mtls else 0,
                totals.duration,
            )
        istio.count_reports("http", n)
        if reports:
            self._write(reports)

    def tcp(self, node: Workload, entries) -> None:
        """One batch of TCPAccessLogEntry messages from the proxy ``node``."""
        reports: list[Report] | None = [] if self.writer is not None else None
        n = 0
        for series, t in self.ingest.tcp(node, entries, reports).items():
            n += t.n
            self.istio.record_tcp(series.values, t.opened, t.closed, t.sent, t.received, t.n)
            self.store.add_tcp(series.edge, t.n, t.opened, t.sent + t.received, t.n if series.mtls else 0)
        self.istio.count_reports("tcp", n)
        if reports:
            self._write(reports)

    def _write(self, reports: list[Report]) -> None:
        if self.writer is None:
            return
        for report in reports:
            try:
                self.writer.write(report)
            except (OSError, ValueError):
                self.metrics.als_write_errors.inc()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class MixerState:
    """What the HTTP side reads."""

    def __init__(self, registry, holder, telemetry, denials, ratelimits, usage, backend_name) -> None:
        self.registry = registry
        self.holder = holder
        self.store = telemetry.store
        self.denials = denials
        self.ratelimits = ratelimits
        self.usage = usage
        self.backend_name = backend_name
        self.ready = False

    def is_ready(self) -> bool:
        return self.ready


class _HttpServer(uvicorn.Server):
    """uvicorn without its own signal handling: mixer's loop owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


def run(options: MixerOptions) -> int:
    return asyncio.run(_serve(options))


async def _serve(options: MixerOptions) -> int:
    registry = REGISTRY
    Info("isthmus_component", "Which Isthmus component this process is", registry=registry).info(
        {"component": "mixer"}
    )
    metrics = MixerMetrics(registry)

    def on_config(ok: bool) -> None:
        metrics.config_reloads.labels("success" if ok else "failure").inc()
        metrics.config_last_success.set(1 if ok else 0)

    holder = ConfigHolder(options.config_path, on_config)
    try:
        holder.load_initial()
    except (ConfigError, OSError, UnicodeDecodeError) as e:
        print(f"mixer: {e}", file=sys.stderr, flush=True)
        event(log, logging.ERROR, "config.invalid", error=str(e))
        return 1
    if options.redis_url:
        from mixer.adapters.redis_quota import RedisBackend

        backend = RedisBackend(options.redis_url)
    else:
        backend = MemoryBackend()
    telemetry = Telemetry(registry, metrics, holder.current)
    holder.listeners.append(telemetry.apply)
    denials, ratelimits, usage = RecentEvents(), RecentEvents(), QuotaUsage()
    state = MixerState(registry, holder, telemetry, denials, ratelimits, usage, backend.name)

    grpc_target = f"{options.grpc_addr[0]}:{options.grpc_addr[1]}"
    try:
        http_sock = bind_tcp(options.http_addr)
        if options.grpc_addr[1] != 0:
            check_free(options.grpc_addr)
    except ListenError as e:
        print(f"mixer: {e}", file=sys.stderr, flush=True)
        event(log, logging.ERROR, "server.listen_failed", error=str(e))
        return 1
    server = grpc.aio.server()
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(
        AuthorizationService(holder, metrics, denials), server
    )
    rls_pb2_grpc.add_RateLimitServiceServicer_to_server(
        RateLimitService(holder, QuotaService(backend), metrics, ratelimits, usage), server
    )
    accesslog.add_to_server(AccessLogService(telemetry, metrics), server)
    try:
        grpc_port = server.add_insecure_port(grpc_target)
    except RuntimeError as e:
        http_sock.close()
        print(f"mixer: cannot listen on {grpc_target}: {e}", file=sys.stderr, flush=True)
        event(log, logging.ERROR, "server.listen_failed", address=grpc_target, error=str(e))
        return 1
    await server.start()
    event(
        log,
        logging.INFO,
        "grpc.listening",
        address=f"{options.grpc_addr[0]}:{grpc_port}",
        quota_backend=backend.name,
    )

    http = _HttpServer(
        uvicorn.Config(
            http_api.build_app(state),
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    http_task = asyncio.create_task(http.serve(sockets=[http_sock]))
    watch_task = asyncio.create_task(holder.watch(options.reload_interval))
    while not http.started and not http_task.done():
        await asyncio.sleep(0.01)
    if http_task.done():
        await server.stop(None)
        return 1
    event(
        log,
        logging.INFO,
        "server.listening",
        address=f"{options.http_addr[0]}:{http_sock.getsockname()[1]}",
        endpoints="/,/ready,/metrics,/api/",
    )
    state.ready = True
    stop_wait = asyncio.create_task(stop.wait())
    await asyncio.wait([stop_wait, http_task], return_when=asyncio.FIRST_COMPLETED)
    state.ready = False
    watch_task.cancel()
    http.should_exit = True
    await server.stop(grace=2)
    with contextlib.suppress(asyncio.CancelledError):
        await http_task
    await backend.close()
    telemetry.close()
    event(log, logging.INFO, "server.stopped")
    return 0
