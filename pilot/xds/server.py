"""The ADS server (``envoy.service.discovery.v3.AggregatedDiscoveryService`` on grpc.aio) and the push
pipeline: events -> debounce -> one PushContext per merged event -> affected proxies -> push queue ->
``push_concurrency`` workers, one push in flight per proxy.

Contracts read here (other modules own them):
* config store: ``snapshot() -> ConfigSnapshot``, ``subscribe(callback(changed_keys, snapshot))``
* registry: ``snapshot() -> RegistrySnapshot``, ``subscribe(callback(snapshot, endpoints_only))``,
  ``register(proxy)``, ``unregister(proxy, grace)``
Callbacks may come from any thread; they are handed to the event loop.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import json_format

from isthmus.log import event
from pilot.model.proxy import NodeIdError, Proxy, parse_node
from pilot.model.push_context import MeshConfig, PushContext
from pilot.model.service import RegistrySnapshot
from pilot.xds import protocol, resources
from pilot.xds.affected import EDS_ONLY, FULL, push_scope
from pilot.xds.cache import XdsCache, cache_for
from pilot.xds.connection import Connection
from pilot.xds.debounce import Debouncer, PushRequest, config_push, endpoint_push, service_push
from pilot.xds.generators import Generators, UnsupportedType
from pilot.xds.metrics import XdsMetrics
from pilot.xds.pushqueue import PushQueue
from pilot.xds.sendbudget import SendBudget
from pilot.xds.status import WatchState
from pilot.xds.wire import response_size, serialize_response

log = logging.getLogger("pilot.xds")

REGISTRY_KINDS = frozenset({"ServiceEntry", "WorkloadEntry"})
# a type -> the type whose update makes Envoy wait for it (cluster and listener warming)
WARMED_BY = {resources.ENDPOINT: resources.CLUSTER, resources.ROUTE: resources.LISTENER}


ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
# grpc.aio server options for the xDS port, for thousands of streams per process:
# * no HTTP/2 stream limit per connection (gRPC's default is 100 on some builds);
# * gRPC core queues calls the application has not picked up yet, and above
#   `max_pending_requests` (1000 by default, hard limit 3000) it cancels new calls at random, and
#   after `server_max_unrequested_time_in_server` (30 s) it cancels waiting ones. grpc.aio picks calls
#   up on the event loop, so 2000 proxies connecting at once lost streams with the defaults. Responses
#   now share the cache's bytes (pilot.xds.wire) so the loop is not starved, and the limits are raised
#   so that a reconnect storm delays streams instead of cancelling them.
SERVER_OPTIONS = (
    ("grpc.max_concurrent_streams", 100000),
    ("grpc.server.max_pending_requests", 100000),
    ("grpc.server.max_pending_requests_hard_limit", 100000),
    ("grpc.server_max_unrequested_time_in_server", 600),
)


def add_to_server(servicer: ads_pb2_grpc.AggregatedDiscoveryServiceServicer, server) -> None:
    """Register the ADS service like the generated ``add_..._to_server``, except that responses may be
    ``PreparedResponse`` (SotW with pre-encoded resources) as well as protobuf messages."""
    handlers = {
        "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
            servicer.StreamAggregatedResources,
            request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
            response_serializer=serialize_response,
        ),
        "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
            servicer.DeltaAggregatedResources,
            request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
            response_serializer=serialize_response,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(ADS_SERVICE, handlers),))
    server.add_registered_method_handlers(ADS_SERVICE, handlers)


def endpoint_fingerprints(snapshot: RegistrySnapshot) -> dict[str, frozenset]:
    """host -> what EDS would carry for it (labels count: Endpoint's equality ignores them)."""
    out: dict[str, set] = {}
    for e in snapshot.endpoints:
        out.setdefault(e.service, set()).add(
            (
                e.service_port,
                e.address,
                e.port,
                tuple(sorted(e.labels.items())),
                e.locality,
                e.weight,
                e.tls_mode,
                e.service_account,
            )
        )
    return {host: frozenset(v) for host, v in out.items()}


def registry_diff(old: RegistrySnapshot, new: RegistrySnapshot) -> tuple[set[str], set[str]]:
    """(services added/changed/removed, hosts whose endpoints changed)."""
    old_services = {s.hostname: s for s in old.services}
    new_services = {s.hostname: s for s in new.services}
    services = {
        h for h in old_services.keys() | new_services.keys() if old_services.get(h) != new_services.get(h)
    }
    old_eps, new_eps = endpoint_fingerprints(old), endpoint_fingerprints(new)
    hosts = {h for h in old_eps.keys() | new_eps.keys() if old_eps.get(h) != new_eps.get(h)}
    # Clusters carry what the endpoints' identities imply (auto mTLS on or off, the SANs to verify),
    # so a change in who serves a host, not only where, needs a full push, not EDS alone.
    old_ids, new_ids = _identities(old), _identities(new)
    services |= {h for h in hosts if old_ids.get(h) != new_ids.get(h)}
    return services, hosts


def _identities(snapshot: RegistrySnapshot) -> dict[str, frozenset[tuple[str, str]]]:
    """Per host: the (tls_mode, service_account) pairs of its endpoints."""
    out: dict[str, set[tuple[str, str]]] = {}
    for e in snapshot.endpoints:
        out.setdefault(e.service, set()).add((e.tls_mode, e.service_account))
    return {h: frozenset(v) for h, v in out.items()}


class DiscoveryServer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    def __init__(
        self,
        store,
        registry,
        mesh: MeshConfig | None = None,
        generators: Generators | None = None,
        metrics: XdsMetrics | None = None,
        debounce_after: float = 0.1,
        debounce_max: float = 1.0,
        push_concurrency: int = 100,
        unregister_grace: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        verify_cache: bool = False,
        send_budget_bytes: int = 64 << 20,
    ) -> None:
        if push_concurrency < 1:
            raise ValueError("push_concurrency must be at least 1")
        self.store, self.registry = store, registry
        self.mesh = mesh or MeshConfig()
        self.generators = generators or Generators()
        self.metrics = metrics or XdsMetrics()
        self.debouncer = Debouncer(debounce_after, debounce_max)
        self.push_concurrency = push_concurrency
        self.unregister_grace = unregister_grace
        self.clock = clock
        self.verify_cache = verify_cache  # regenerate on every cache hit and compare (tests)
        self.connections: dict[str, Connection] = {}
        # serialized responses being written, all streams together (see pilot.xds.sendbudget)
        self.send_budget = SendBudget(send_budget_bytes)
        self._by_proxy: dict[str, dict[str, Connection]] = {}  # proxy id -> its streams, oldest first
        self.queue: PushQueue[str] = PushQueue()
        self._versions = itertools.count(1)
        self._conn_ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._registry_seen = registry.snapshot()
        self.push_context = self._build_push_context()
        self.rounds = 0

    # -- push contexts ------------------------------------------------------------------------------
    def _build_push_context(self) -> PushContext:
        return PushContext(
            config=self.store.snapshot(),
            registry=self.registry.snapshot(),
            mesh=self.mesh,
            version=f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}/{next(self._versions)}",
        )

    def cache_for(self, push: PushContext) -> XdsCache:
        """The serialized-resource cache of `push` (one per push context; see ``pilot.xds.cache``)."""
        return cache_for(push, self.generators.generate, verify=self.verify_cache)

    # -- lifecycle ----------------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.store.subscribe(self._on_config_change)
        self.registry.subscribe(self._on_registry_change)
        self._tasks.append(asyncio.create_task(self._debounce_loop(), name="xds-debounce"))
        for i in range(self.push_concurrency):
            self._tasks.append(asyncio.create_task(self._push_worker(), name=f"xds-push-{i}"))

    async def stop(self) -> None:
        self.queue.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for conn in list(self.connections.values()):
            conn.outbox.put_nowait(None)

    # -- events in (any thread) ---------------------------------------------------------------------
    def _on_config_change(self, changed_keys, snapshot=None) -> None:
        # ServiceEntry and WorkloadEntry reach the proxies through the registry, whose event says
        # whether services or only endpoints changed (then it is an EDS-only push), as in Istio.
        keys = [k for k in changed_keys or () if k.kind not in REGISTRY_KINDS]
        if keys:
            self._submit(lambda now: config_push(keys, now), "config")

    def _on_registry_change(self, snapshot=None, endpoints_only: bool = False) -> None:
        def make(now: float) -> PushRequest | None:
            new = snapshot if snapshot is not None else self.registry.snapshot()
            services, hosts = registry_diff(self._registry_seen, new)
            self._registry_seen = new
            if services:
                return service_push(services, now).merge(endpoint_push(hosts, now))
            if hosts:
                return endpoint_push(hosts, now)
            return None

        self._submit(make, "endpoints" if endpoints_only else "services")

    def _submit(self, make: Callable[[float], PushRequest | None], reason: str) -> None:
        loop = self._loop
        if loop is None:
            return  # not started: the first push context reads everything anyway

        def on_loop() -> None:
            request = make(self.clock())
            if request is None:
                return
            self.metrics.triggers.labels(reason).inc()
            self.debouncer.add(request, self.clock())
            self._events.set()

        try:
            if _running_loop() is loop:
                on_loop()
            else:
                loop.call_soon_threadsafe(on_loop)
        except RuntimeError:  # loop closed during shutdown
            pass

    # -- debounce and push rounds -------------------------------------------------------------------
    async def _debounce_loop(self) -> None:
        while True:
            deadline = self.debouncer.deadline()
            self._events.clear()
            if deadline is None:
                await self._events.wait()
                continue
            delay = deadline - self.clock()
            if delay > 0:
                try:
                    await asyncio.wait_for(self._events.wait(), delay)
                except TimeoutError:
                    pass
                continue
            request = self.debouncer.take()
            if request is not None:
                self.metrics.merged.inc(request.count)
                self.push_round(request)

    async def flush(self) -> None:
        """Push what the debouncer holds now, without waiting for its quiet period (start-up: pilot
        says ready only once what the config dir loaded is in the served push context)."""
        await asyncio.sleep(0)  # let events handed over from other threads reach the debouncer
        request = self.debouncer.take()
        if request is not None:
            self.metrics.merged.inc(request.count)
            self.push_round(request)
        elif not self.connections:  # nothing pending, nobody served yet: read the sources afresh anyway
            self._registry_seen = self.registry.snapshot()
            self.push_context = self._build_push_context()

    def push_round(self, request: PushRequest) -> None:
        """One merged event: one new immutable PushContext, shared by the whole round, and a queue
        entry for every affected proxy (EDS-only where only its endpoints changed)."""
        self.push_context = self._build_push_context()
        self.rounds += 1
        push = self.push_context
        affected = 0
        for conn_id, conn in list(self.connections.items()):
            names, wildcard = conn.watched_eds()
            scope = push_scope(conn.proxy, push, request, names, wildcard)
            if scope is None:
                continue
            affected += 1
            if scope == EDS_ONLY and request.full:
                request_for_conn = PushRequest(
                    full=False,
                    config_keys=frozenset(),
                    eds_hosts=request.eds_hosts,
                    reasons=request.reasons,
                    start=request.start,
                    count=request.count,
                )
            else:
                request_for_conn = request
            self.queue.enqueue(conn_id, request_for_conn)
        event(
            log,
            logging.INFO,
            "xds.push_round",
            version=push.version,
            full=request.full,
            reasons=",".join(sorted(request.reasons)),
            merged=request.count,
            affected=affected,
            connected=len(self.connections),
        )

    async def _push_worker(self) -> None:
        while True:
            item = await self.queue.get()
            if item is None:
                return
            conn_id, request = item
            try:
                conn = self.connections.get(conn_id)
                if conn is not None:
                    await self.push_connection(conn, request)
            except Exception:  # a bad push must not stop the worker
                log.exception("xds.push_failed", extra={"fields": {"conn": conn_id}})
            finally:
                self.queue.mark_done(conn_id)

    async def push_connection(self, conn: Connection, request: PushRequest) -> None:
        push = self.push_context
        types = [t for t in resources.PUSH_ORDER if t in conn.watches]
        if not request.full:
            types = [t for t in types if t == resources.ENDPOINT]
        async with conn.lock:
            sent_types: set[str] = set()
            for type_url in types:
                # SotW: a type whose ACKed content is unchanged is skipped, except EDS after CDS and RDS
                # after LDS were sent (Envoy re-warms updated clusters and listeners from them)
                always = WARMED_BY.get(type_url) in sent_types
                if self._respond(conn, conn.watches[type_url], push, always=always):
                    sent_types.add(type_url)
            sent = bool(sent_types)
        if sent:
            conn.pushes += 1
            if request.start:
                self.metrics.convergence.observe(max(0.0, self.clock() - request.start))

    def _respond(self, conn: Connection, watch: WatchState, push: PushContext, always: bool) -> bool:
        short = resources.short_name(watch.type_url)
        started = time.perf_counter()
        try:
            cache = self.cache_for(push)
            if conn.delta:
                response = conn.delta_response(watch, push, cache, self.clock(), always)
            else:
                response = conn.sotw_response(watch, push, cache, self.clock(), always)
        except UnsupportedType as e:
            watch.error = str(e)
            event(log, logging.WARNING, "xds.unsupported_type", proxy=conn.proxy.id, type=watch.type_url)
            return False
        except Exception as e:
            self.metrics.generate_errors.inc()
            watch.error = f"pilot could not build {short}: {e}"
            log.exception("xds.generate_failed", extra={"fields": {"proxy": conn.proxy.id, "type": short}})
            return False
        self.metrics.push_time.labels(short.lower()).observe(time.perf_counter() - started)
        if response is None:
            return False
        self.metrics.pushes.labels(short.lower()).inc()
        conn.outbox.put_nowait(response)
        return True

    # -- streams ------------------------------------------------------------------------------------
    async def StreamAggregatedResources(self, request_iterator, context):  # noqa: N802 (gRPC's name)
        async for response in self._serve_stream(request_iterator, context, delta=False):
            yield response

    async def DeltaAggregatedResources(self, request_iterator, context):  # noqa: N802
        async for response in self._serve_stream(request_iterator, context, delta=True):
            yield response

    async def _serve_stream(self, request_iterator, context, delta: bool):
        requests = request_iterator.__aiter__()
        first = await _first_request(requests)
        if first is None:
            return
        if not first.HasField("node") or not first.node.id:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "the first request must carry a Node with an id"
            )
            return
        try:
            proxy = parse_node(first.node.id, json_format.MessageToDict(first.node.metadata))
        except NodeIdError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            return
        conn = Connection(f"{proxy.id}-{next(self._conn_ids)}", proxy, delta, peer=context.peer() or "")
        self._connect(conn)
        reader = asyncio.create_task(self._read_requests(conn, first, requests))
        try:
            while True:
                response = await conn.outbox.get()
                if response is None:
                    break
                size = response_size(response)
                await self.send_budget.acquire(size)
                try:
                    yield response  # returns once gRPC has taken the serialized message
                finally:
                    self.send_budget.release(size)
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            self._disconnect(conn)

    def _connect(self, conn: Connection) -> None:
        self.connections[conn.conn_id] = conn
        self._by_proxy.setdefault(conn.proxy.id, {})[conn.conn_id] = conn
        self.metrics.connected.set(len(self.connections))
        event(
            log,
            logging.INFO,
            "xds.connected",
            proxy=conn.proxy.id,
            conn=conn.conn_id,
            type=conn.proxy.type,
            delta=conn.delta,
            peer=conn.peer,
        )
        try:
            self.registry.register(conn.proxy)
        except Exception as e:  # a workload the registry cannot take still gets its config
            event(log, logging.WARNING, "xds.register_failed", proxy=conn.proxy.id, error=str(e))

    def _disconnect(self, conn: Connection) -> None:
        if self.connections.pop(conn.conn_id, None) is None:
            return
        self.queue.remove(conn.conn_id)
        self.metrics.connected.set(len(self.connections))
        event(log, logging.INFO, "xds.disconnected", proxy=conn.proxy.id, conn=conn.conn_id)
        by_id = self._by_proxy.get(conn.proxy.id)
        if by_id is not None:
            by_id.pop(conn.conn_id, None)
            if not by_id:
                del self._by_proxy[conn.proxy.id]
        if conn.proxy.id not in self._by_proxy:
            try:
                self.registry.unregister(conn.proxy, self.unregister_grace)
            except Exception as e:
                event(log, logging.WARNING, "xds.unregister_failed", proxy=conn.proxy.id, error=str(e))

    async def _read_requests(self, conn: Connection, first, request_iterator) -> None:
        try:
            await self.handle_request(conn, first)
            async for request in request_iterator:
                await self.handle_request(conn, request)
        except (asyncio.CancelledError, grpc.aio.AioRpcError):
            pass
        except Exception:
            log.exception("xds.stream_failed", extra={"fields": {"proxy": conn.proxy.id}})
        finally:
            conn.outbox.put_nowait(None)

    async def handle_request(self, conn: Connection, request) -> None:
        if conn.delta:
            await self._handle_delta(conn, request)
        else:
            await self._handle_sotw(conn, request)

    async def _handle_sotw(self, conn: Connection, request: discovery_pb2.DiscoveryRequest) -> None:
        type_url = request.type_url
        error = request.error_detail.message if request.HasField("error_detail") else ""
        async with conn.lock:
            watch = conn.watches.get(type_url)
            decision = protocol.sotw(
                watch, type_url, list(request.resource_names), request.response_nonce, error
            )
            if decision.kind == protocol.STALE_NONCE:
                event(log, logging.DEBUG, "xds.stale_nonce", proxy=conn.proxy.id, type=type_url)
                return
            if watch is None:
                watch = WatchState(type_url)
                conn.watches[type_url] = watch
            if decision.kind == protocol.NACK:
                self._record_nack(conn, watch, request.response_nonce, error)
                return
            if decision.kind in (protocol.ACK, protocol.RESUBSCRIBE):
                watch.record_ack(request.response_nonce)
            watch.names = decision.names
            watch.wildcard = protocol.is_wildcard(type_url, decision.names, "*" in request.resource_names)
            if decision.respond:
                self._respond(conn, watch, self.push_context, always=True)

    async def _handle_delta(self, conn: Connection, request: discovery_pb2.DeltaDiscoveryRequest) -> None:
        type_url = request.type_url
        error = request.error_detail.message if request.HasField("error_detail") else ""
        async with conn.lock:
            watch = conn.watches.get(type_url)
            decision = protocol.delta(
                watch,
                type_url,
                list(request.resource_names_subscribe),
                list(request.resource_names_unsubscribe),
                request.response_nonce,
                error,
            )
            if watch is None:
                watch = WatchState(type_url)
                watch.resource_versions = dict(request.initial_resource_versions)
                conn.watches[type_url] = watch
            if request.response_nonce:  # what the proxy holds: an ACK takes that response, a NACK not
                watch.settle(request.response_nonce, accepted=not error)
            if decision.kind == protocol.NACK:
                self._record_nack(conn, watch, request.response_nonce, error)
            elif decision.kind in (protocol.ACK, protocol.RESUBSCRIBE) and request.response_nonce:
                watch.record_ack(request.response_nonce)
            watch.forget(request.resource_names_unsubscribe)
            watch.names, watch.wildcard = decision.names, decision.wildcard
            if decision.respond:
                self._respond(conn, watch, self.push_context, always=decision.kind == protocol.NEW)

    def _record_nack(self, conn: Connection, watch: WatchState, nonce: str, error: str) -> None:
        watch.record_nack(nonce, error)
        short = resources.short_name(watch.type_url)
        self.metrics.rejects.labels(short.lower()).inc()
        event(
            log,
            logging.WARNING,
            "xds.nack",
            proxy=conn.proxy.id,
            type=short,
            version=watch.version_sent,
            error=error,
        )

    # -- views --------------------------------------------------------------------------------------
    def find(self, proxy_id: str) -> Connection | None:
        """The newest connection of a proxy id (or of a connection id)."""
        if proxy_id in self.connections:
            return self.connections[proxy_id]
        found = self._by_proxy.get(proxy_id)
        if found:
            return list(found.values())[-1]
        found = [c for c in self.connections.values() if c.proxy.id == proxy_id]  # added without _connect
        return found[-1] if found else None


async def _first_request(requests):
    try:
        return await requests.__anext__()
    except (StopAsyncIteration, grpc.aio.AioRpcError):
        return None


def _running_loop():
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def proxy_summary(proxy: Proxy) -> dict:
    return {"id": proxy.id, "type": proxy.type, "namespace": proxy.namespace, "ips": proxy.ip_addresses}


__all__ = ["DiscoveryServer", "SERVER_OPTIONS", "add_to_server", "FULL", "EDS_ONLY", "registry_diff"]
