"""pilot's process: config store and directory watcher, service registries, the xDS server (gRPC) and
the HTTP server (apply API, debug pages, /metrics, /ready), all on one asyncio loop.

HTTP endpoints (all JSON except /ready and /metrics):

* ``/apis/...``                the apply API (``pilot.server.api.make_config_router``)
* ``/ready``                  200 ``ready`` once the xDS server listens and the config dir is loaded
* ``/metrics``                Prometheus text (see ``pilot.xds.metrics`` for the names)
* ``/debug/syncz``            per proxy and type: SYNCED / STALE / NOT SENT / NACKED (+ error)
* ``/debug/config_dump?proxyID=ID``  what pilot would send that proxy, as ``envoy.admin.v3.ConfigDump``
* ``/debug/registryz``        services and endpoints of the aggregate registry
* ``/debug/configz``          every accepted config
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import sys
from dataclasses import dataclass

import grpc
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from isthmus.listen import ListenError, bind_tcp, check_free
from isthmus.log import event
from pilot.config.persist import ConfigStoreError, PersistentConfig
from pilot.model.mesh import load_mesh_config, with_mixer
from pilot.model.push_context import MeshConfig
from pilot.xds import debug
from pilot.xds import server as xds_server
from pilot.xds.generators import Generators
from pilot.xds.metrics import XdsMetrics
from pilot.xds.server import DiscoveryServer

log = logging.getLogger("pilot.server")


@dataclass(frozen=True)
class Settings:
    grpc_addr: tuple[str, int] = ("127.0.0.1", 15010)
    http_addr: tuple[str, int] = ("127.0.0.1", 15014)
    config_dir: str | None = None
    domain: str = "cluster.local"
    root_namespace: str = "istio-system"
    debounce_after: float = 0.1
    debounce_max: float = 1.0
    push_concurrency: int = 100
    unregister_grace: float = 10.0
    mesh_config: str | None = None  # Istio MeshConfig YAML (extensionProviders, defaultProviders, ...)
    mixer_address: tuple[str, int] | None = None  # mixer as the default CUSTOM and telemetry provider
    config_store: str | None = None  # directory keeping what the apply API took (survives restarts)


def mesh_from_settings(settings: Settings) -> MeshConfig:
    """--domain/--root-namespace, then the --mesh-config file, then --mixer-address's defaults (a file's
    providers of the same name win). Raises MeshConfigError; unknown fields are logged."""
    mesh = MeshConfig(domain=settings.domain, root_namespace=settings.root_namespace)
    if settings.mesh_config:
        mesh = load_mesh_config(settings.mesh_config, mesh)
        for w in mesh.warnings:
            event(log, logging.WARNING, "mesh_config.unsupported", detail=w)
    if settings.mixer_address:
        mesh = with_mixer(mesh, settings.mixer_address[0], settings.mixer_address[1])
    return mesh


class MeshRegistry:
    """The registry the xDS server sees: the aggregate's snapshot and events, and auto-registration."""

    def __init__(self, aggregate, auto) -> None:
        self.aggregate, self.auto = aggregate, auto

    def snapshot(self):
        return self.aggregate.snapshot()

    def subscribe(self, callback) -> None:
        self.aggregate.subscribe(callback)

    def register(self, proxy) -> None:
        self.auto.register(proxy)

    def unregister(self, proxy, grace: float) -> None:
        self.auto.unregister(proxy, grace)


def make_store(settings: Settings, known_hosts=None):
    """The ConfigStore of ``pilot.config``; ``known_hosts`` feeds its unknown-host warning."""
    from pilot.config.persist import PersistentConfig
    from pilot.config.store import ConfigStore

    persist = None
    if settings.config_store:
        persist = PersistentConfig(settings.config_store, settings.config_dir).save
    return ConfigStore(domain=settings.domain, known_hosts=known_hosts, persist=persist)


def make_registry(settings: Settings, store) -> tuple[MeshRegistry, object]:
    from pilot.serviceregistry.aggregate import AggregateRegistry
    from pilot.serviceregistry.autoregister import AutoRegistry
    from pilot.serviceregistry.serviceentry import ServiceEntryRegistry

    entries = ServiceEntryRegistry(settings.domain)
    auto = AutoRegistry(settings.domain)
    entries.update(store.snapshot())
    store.subscribe(lambda changed_keys, snapshot: entries.update(snapshot))
    return MeshRegistry(AggregateRegistry([entries, auto]), auto), entries


class Pilot:
    def __init__(self, settings: Settings, store=None, registry=None, generators: Generators | None = None):
        self.settings = settings
        self.store = store if store is not None else make_store(settings, self._known_hosts)
        self.registry = registry if registry is not None else make_registry(settings, self.store)[0]
        self.metrics_registry = CollectorRegistry()
        ProcessCollector(registry=self.metrics_registry)
        PlatformCollector(registry=self.metrics_registry)
        Info(
            "isthmus_component", "Which Isthmus component this process is", registry=self.metrics_registry
        ).info({"component": "pilot"})
        self.metrics = XdsMetrics(self.metrics_registry)
        mesh = mesh_from_settings(settings)
        self.xds = DiscoveryServer(
            self.store,
            self.registry,
            mesh=mesh,
            generators=generators,
            metrics=self.metrics,
            debounce_after=settings.debounce_after,
            debounce_max=settings.debounce_max,
            push_concurrency=settings.push_concurrency,
            unregister_grace=settings.unregister_grace,
        )
        self.pilot_id = f"pilot-{socket.gethostname()}-{os.getpid()}"
        self.ready = False
        self.grpc_port: int | None = None
        self.http = self.make_http_app()

    def _known_hosts(self) -> list[str]:
        registry = getattr(self, "registry", None)
        return [s.hostname for s in registry.snapshot().services] if registry is not None else []

    # -- HTTP ---------------------------------------------------------------------------------------
    def make_http_app(self) -> FastAPI:
        app = FastAPI(title="pilot", docs_url=None, redoc_url=None)
        try:
            from pilot.server.api import make_config_router
        except ImportError as e:  # the apply API is another module; say so rather than hide it
            event(log, logging.WARNING, "http.apply_api_missing", error=str(e))
        else:
            app.include_router(make_config_router(self.store))

        @app.middleware("http")
        async def count_rejections(request: Request, call_next):
            response = await call_next(request)
            if request.url.path.startswith("/apis/") and response.status_code in (400, 422):
                self.metrics.validation_errors.labels("api").inc()
            return response

        @app.get("/ready")
        def ready() -> Response:
            ok = self.ready
            return PlainTextResponse("ready\n" if ok else "not ready\n", status_code=200 if ok else 503)

        @app.get("/metrics")
        def metrics() -> Response:
            return Response(generate_latest(self.metrics_registry), media_type=CONTENT_TYPE_LATEST)

        @app.get("/debug/syncz")
        def syncz() -> list[dict]:
            return debug.syncz(list(self.xds.connections.values()), self.pilot_id)

        @app.get("/debug/config_dump")
        def config_dump(proxyID: str = "") -> Response:  # noqa: N803 (Istio's query parameter)
            conn = self.xds.find(proxyID)
            if conn is None:
                return JSONResponse({"error": f"proxy {proxyID!r} is not connected"}, status_code=404)
            return JSONResponse(debug.config_dump(conn, self.xds.push_context, self.xds.generators))

        @app.get("/debug/registryz")
        def registryz() -> dict:
            snap = self.registry.snapshot()
            return {
                "version": snap.version,
                "services": [_jsonable(s) for s in snap.services],
                "endpoints": [_jsonable(e) for e in snap.endpoints],
            }

        @app.get("/debug/configz")
        def configz() -> list[dict]:
            return [_jsonable(c) for c in self.store.snapshot().all()]

        return app

    # -- run ----------------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> int:
        server = grpc.aio.server(options=list(xds_server.SERVER_OPTIONS))
        xds_server.add_to_server(self.xds, server)
        host, port = self.settings.grpc_addr
        try:
            stored = self.load_config_store()
        except ConfigStoreError as e:
            print(f"pilot: {e}", file=sys.stderr, flush=True)
            event(log, logging.ERROR, "server.config_store_failed", error=str(e))
            return 1
        try:
            http_sock = bind_tcp(self.settings.http_addr)
            if port != 0:
                check_free(self.settings.grpc_addr)
        except ListenError as e:
            print(f"pilot: {e}", file=sys.stderr, flush=True)
            event(log, logging.ERROR, "server.listen_failed", error=str(e))
            return 1
        try:
            self.grpc_port = server.add_insecure_port(f"{host}:{port}")
        except RuntimeError as e:
            http_sock.close()
            print(f"pilot: cannot listen on {host}:{port}: {e}", file=sys.stderr, flush=True)
            event(log, logging.ERROR, "server.listen_failed", address=f"{host}:{port}", error=str(e))
            return 1
        http = _QuietServer(uvicorn.Config(self.http, log_level="warning", access_log=False, lifespan="off"))
        # As istiod waits for its caches to sync: the config dir and the stored config are loaded and in
        # the push context before the first stream is served, so a proxy reconnecting to a restarted
        # pilot is never pushed a partial config (which would remove its clusters and listeners).
        await self.xds.start()
        watcher = await self._start_watcher()
        if stored:
            self.store.restore(stored)
            event(log, logging.INFO, "server.config_store_loaded", resources=len(stored))
        await self.xds.flush()
        await server.start()
        http_task = asyncio.create_task(http.serve(sockets=[http_sock]), name="pilot-http")
        while not http.started and not http_task.done():
            await asyncio.sleep(0.01)
        if http_task.done():
            event(log, logging.ERROR, "server.listen_failed", address=_fmt(self.settings.http_addr))
            await server.stop(0)
            await self.xds.stop()
            return 1
        self.ready = True
        event(
            log,
            logging.INFO,
            "server.listening",
            grpc=f"{host}:{self.grpc_port}",
            http=_fmt(self.settings.http_addr),
            config_dir=self.settings.config_dir or "",
            config_store=self.settings.config_store or "",
        )
        await stop.wait()
        self.ready = False
        http.should_exit = True
        if watcher is not None and hasattr(watcher, "stop"):
            with contextlib.suppress(Exception):
                result = watcher.stop()
                if asyncio.iscoroutine(result):
                    await result
        await self.xds.stop()
        await server.stop(1)
        await http_task
        event(log, logging.INFO, "server.stopped")
        return 0

    def load_config_store(self) -> list:
        """What ``--config-store`` holds (a start-up error names a bad file: ConfigStoreError)."""
        if not self.settings.config_store:
            return []
        disk = PersistentConfig(self.settings.config_store, self.settings.config_dir)
        disk.open()
        return disk.load()

    async def _start_watcher(self):
        if not self.settings.config_dir:
            return None

        def rejected() -> None:
            self.metrics.validation_errors.labels("config-dir").inc()

        watcher = counting_watcher(self.store, self.settings.config_dir, rejected)
        # start() loads the directory once before returning: /ready says yes only after that
        return await asyncio.to_thread(watcher.start)


def counting_watcher(store, directory: str, on_rejected):
    """The ``--config-dir`` watcher of ``pilot.config``, calling ``on_rejected()`` once for every file
    version it rejects (``pilot_total_config_validation_errors{source="config-dir"}``).

    Read from the watcher's public ``problems`` (file -> problems of its last attempt; a new list per
    attempt): after each scan, a file whose list was replaced and holds an error was rejected once,
    however many times the first scan retried it."""
    from pilot.config import problems as P
    from pilot.config.watcher import DirWatcher

    class CountingDirWatcher(DirWatcher):
        def scan(self) -> bool:
            before = dict(self.problems)
            try:
                return super().scan()
            finally:
                for f, found in list(self.problems.items()):
                    if found is not before.get(f) and P.has_errors(found):
                        on_rejected()

    return CountingDirWatcher(store, directory)


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the process's stop event ends it."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


def _fmt(addr: tuple[str, int]) -> str:
    return f"{addr[0]}:{addr[1]}"


def _jsonable(obj):
    if dataclasses.is_dataclass(obj):
        return {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in obj]
    return obj
