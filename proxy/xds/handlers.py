"""The proxy side of xDS: one ``TypeHandler`` per type URL (see ``proxy/xds/api.py``).

Every handler first *validates the whole batch* by building the new runtime objects (``Listener``,
``Cluster``, ``RouteTable``, endpoint sets) without touching what is in service; any problem raises
``UpdateRejected`` naming each bad resource, and the last good config stays. Only then is the batch
swapped in, one reference per resource, as Envoy does:

* CDS: a cluster of type EDS *warms* until its ClusterLoadAssignment arrives (or its
  ``initial_fetch_timeout`` passes) and only then replaces the active cluster of that name; other
  clusters replace theirs at once. A replaced or removed cluster's pools drain.
* EDS: endpoints go into the EDS clusters (active and warming) that use the service name; hosts of
  unchanged addresses are kept. The last assignment per name is cached, so a re-created cluster
  warms at once from it.
* LDS: a listener whose HttpConnectionManager uses ``rds`` warms until its RouteConfiguration
  arrives. A changed listener on the same address takes over its predecessor's socket (nothing is
  refused); a new address is bound while validating, so a port in use is a NACK. A replaced or
  removed listener drains for ``--drain-time-s``.
* RDS: a ``RouteSubscription`` per route name is the HCM's route provider; a stream reads the table
  once, so a request in flight keeps the table it matched.

Subscriptions follow need: after every change the handlers tell the client which route names and
EDS service names are in use (``client.set_interest``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from envoy.config.route.v3 import route_pb2

from isthmus.log import event
from proxy.config.errors import ConfigError
from proxy.filters.network.http_connection_manager.config import SwappableRouteProvider
from proxy.xds import api

log = logging.getLogger("proxy.xds.handlers")


def _version_of(update: api.ResourceUpdate, name: str) -> str:
    return update.versions.get(name, update.version_info) if update.delta else update.version_info


class _Initialized:
    """Set once the first batch is applied and what it brought has warmed (or the fetch timed out)."""

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None
        self.done = False

    def set(self) -> None:
        self.done = True
        if self._event is not None:
            self._event.set()

    async def wait(self) -> None:
        if self.done:
            return
        if self._event is None:
            self._event = asyncio.Event()
        await self._event.wait()


class XdsHandlers:
    """The four handlers sharing one server's managers. ``client`` may be attached later; interest
    computed before that is sent when it is."""

    def __init__(
        self,
        cluster_manager,
        listener_manager_getter: Callable[[], Any],
        stats,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cm = cluster_manager
        self._lm = listener_manager_getter
        self.stats = stats
        self.clock = clock
        self.client: api.XdsClientApi | None = None
        self._interest: dict[str, set[str]] = {}
        # CDS and LDS batches never interleave: a listener update that arrives while a cluster
        # update is still starting its clusters waits for it, as Envoy pauses LDS during CDS, so a
        # listener can name a cluster (e.g. ext_authz's gRPC cluster) from the same push.
        self.config_lock = asyncio.Lock()
        # Called when an update arrives (the server thaws its frozen heap: see proxy.heap).
        self.on_change: Callable[[], None] | None = None
        self.rds = RdsHandler(self)
        self.eds = EdsHandler(self)
        self.cds = CdsHandler(self)
        self.lds = LdsHandler(self)

    @property
    def lm(self):
        return self._lm()

    def handlers(self) -> list:
        return [self.cds, self.eds, self.lds, self.rds]

    def attach(self, client: api.XdsClientApi, lds: bool = True, cds: bool = True) -> None:
        """Register the handlers with the client (LDS/CDS only when the bootstrap asks for them)."""
        self.client = client
        for h in self.handlers():
            if (h is self.lds and not lds) or (h is self.cds and not cds):
                h.initialized.set()
                continue
            client.register(h)
        for type_url, names in self._interest.items():
            client.set_interest(type_url, set(names))

    def set_interest(self, type_url: str, names: set[str]) -> None:
        if self._interest.get(type_url) == names:
            return
        self._interest[type_url] = set(names)
        if self.client is not None:
            self.client.set_interest(type_url, set(names))

    def refresh_interest(self) -> None:
        self.rds.refresh_interest()
        self.eds.refresh_interest()

    async def wait_initialized(self) -> None:
        """Envoy's init: CDS (with its clusters warmed), then LDS (with its listeners warmed)."""
        await self.cds.initialized.wait()
        await self.lds.initialized.wait()

    def changing(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        _tasks.add(task)
        task.add_done_callback(_tasks.discard)


_tasks: set[asyncio.Task] = set()


class _BatchStats:
    """``listener_manager.lds.*`` / ``cluster_manager.cds.*``: every batch, applied or rejected."""

    def __init__(self, scope) -> None:
        self.attempt = scope.counter("update_attempt")
        self.success = scope.counter("update_success")
        self.rejected = scope.counter("update_rejected")
        self.fetch_timeout = scope.counter("init_fetch_timeout")

    async def run(self, apply, update) -> None:
        self.attempt.inc()
        try:
            await apply(update)
        except BaseException:
            self.rejected.inc()
            raise
        self.success.inc()

    def decode_error(self) -> None:
        self.attempt.inc()
        self.rejected.inc()


# --------------------------------------------------------------------------------------------------
# RDS
# --------------------------------------------------------------------------------------------------


class RouteSubscription(SwappableRouteProvider):
    """One RDS route name: the HCMs' route provider (``current()``) and what the admin dumps."""

    def __init__(self, name: str, stats_scope, initial_fetch_timeout: float) -> None:
        super().__init__(name)
        self.proto: route_pb2.RouteConfiguration | None = None
        self.version_info = ""
        self.last_updated = 0.0
        self.received = False
        self.initial_fetch_timeout = initial_fetch_timeout
        self.stats = stats_scope

    def count(self, name: str) -> None:
        self.stats.counter(name).inc()


class RdsHandler:
    type_url = api.ROUTE
    wildcard = False

    def __init__(self, owner: XdsHandlers) -> None:
        self.owner = owner
        self.subscriptions: dict[str, RouteSubscription] = {}
        self.initialized = _Initialized()
        self._collecting: set[str] | None = None

    # -- the HCM's rds hook (ctx.extra["rds_provider_factory"]) ------------------------------------
    def provider_factory(self, rds, path: str, stat_prefix: str = "") -> RouteSubscription:
        from proxy.xds.config import config_source_timeout

        timeout = config_source_timeout(rds.config_source, f"{path}.config_source")
        name = rds.route_config_name
        if not name:
            raise ConfigError(f"{path}.route_config_name", "route_config_name is required")
        sub = self.subscriptions.get(name)
        if sub is None:
            scope = self.owner.stats.scope(f"http.{stat_prefix or 'rds'}.rds.{name}.")
            sub = self.subscriptions[name] = RouteSubscription(name, scope, timeout)
        if self._collecting is not None:
            self._collecting.add(name)
        return sub

    def collect(self) -> _Collector:
        """``with rds.collect() as names:`` records the route names a listener being built uses."""
        return _Collector(self)

    def ready(self, names: set[str]) -> bool:
        return all(self.subscriptions[n].received for n in names if n in self.subscriptions)

    def refresh_interest(self) -> None:
        """Route names in use by any active, warming or draining listener; others are forgotten."""
        lm = self.owner.lm
        used: set[str] = set()
        if lm is not None:
            for listener in list(lm.listeners) + list(lm.warming.values()) + list(lm.draining_listeners):
                used |= listener.rds_names
        if self._collecting is None:
            for name in list(self.subscriptions):
                if name not in used:
                    del self.subscriptions[name]
        self.owner.set_interest(self.type_url, {n for n in used if n in self.subscriptions})

    # -- TypeHandler ---------------------------------------------------------------------------------
    async def on_update(self, update: api.ResourceUpdate) -> None:
        from proxy.router import compile_route_configuration

        self.owner.changing()
        now = self.owner.clock()
        errors: dict[str, str] = {}
        compiled: dict[str, Any] = {}
        touched = []
        for name, rc in update.resources.items():
            sub = self.subscriptions.get(name)
            if sub is None:
                continue  # nobody asked for it (a SotW server may send more)
            sub.count("update_attempt")
            touched.append(sub)
            if sub.received and sub.proto == rc:
                continue
            try:
                compiled[name] = compile_route_configuration(rc, f"RouteConfiguration '{name}'")
            except ConfigError as e:
                errors[name] = str(e)
        if errors:
            for name in errors:
                self.subscriptions[name].count("update_rejected")
            raise api.UpdateRejected(errors)
        for sub in touched:
            name = sub.route_config_name
            if name in compiled:
                sub.update(compiled[name])
                sub.proto = update.resources[name]
                sub.last_updated = now
                sub.count("config_reload")
            sub.version_info = _version_of(update, name)
            sub.received = True
            sub.count("update_success")
        for name in update.removed:
            sub = self.subscriptions.get(name)
            if sub is not None:  # removed by the server: no routes (404 NR) rather than stale ones
                empty = route_pb2.RouteConfiguration(name=name)
                sub.update(compile_route_configuration(empty, f"RouteConfiguration '{name}'"))
                sub.proto = empty
                sub.version_info = _version_of(update, name)
                sub.last_updated = now
                sub.received = True
        if touched or update.removed:
            event(log, logging.INFO, "xds.rds.applied", routes=len(compiled), version=update.version_info)
        self.initialized.set()
        await self.owner.lds.on_routes_changed()

    def on_fetch_timeout(self) -> None:
        self.initialized.set()
        self.owner.spawn(self.owner.lds.activate_all_warming("RDS initial_fetch_timeout"))


class _Collector:
    def __init__(self, rds: RdsHandler) -> None:
        self.rds = rds
        self.names: set[str] = set()

    def __enter__(self) -> set[str]:
        self.rds._collecting = self.names
        return self.names

    def __exit__(self, *exc) -> None:
        self.rds._collecting = None


# --------------------------------------------------------------------------------------------------
# EDS
# --------------------------------------------------------------------------------------------------


class EdsHandler:
    type_url = api.ENDPOINT
    wildcard = False

    def __init__(self, owner: XdsHandlers) -> None:
        self.owner = owner
        # service name -> (ClusterLoadAssignment, version_info, last_updated): the last one applied
        self.cache: dict[str, tuple[Any, str, float]] = {}
        self.initialized = _Initialized()

    def eds_clusters(self) -> dict[str, list]:
        """service name -> the EDS clusters (active and warming) that take it."""
        from proxy.upstream.cluster import EdsCluster

        out: dict[str, list] = {}
        cm = self.owner.cm
        for c in list(cm.clusters.values()) + list(cm.warming.values()):
            if isinstance(c, EdsCluster):
                out.setdefault(c.service_name, []).append(c)
        return out

    def refresh_interest(self) -> None:
        names = set(self.eds_clusters())
        for name in list(self.cache):
            if name not in names:
                del self.cache[name]
        self.owner.set_interest(self.type_url, names)

    def warm_from_cache(self, cluster) -> bool:
        """A new EDS cluster whose service name is known takes the cached assignment at once."""
        cached = self.cache.get(cluster.service_name)
        if cached is None:
            return False
        cla, version, updated = cached
        try:
            cluster.update_endpoints(cla, version=version, now=updated)
        except ConfigError as e:
            event(
                log, logging.WARNING, "xds.eds.cached_assignment_rejected", cluster=cluster.name, error=str(e)
            )
            return False
        return True

    async def on_update(self, update: api.ResourceUpdate) -> None:
        from envoy.config.endpoint.v3 import endpoint_pb2

        self.owner.changing()
        now = self.owner.clock()
        index = self.eds_clusters()
        errors: dict[str, str] = {}
        prepared: dict[int, Any] = {}
        for name, cla in update.resources.items():
            for c in index.get(name, ()):
                c.stats.update_attempt.inc()
                try:
                    prepared[id(c)] = c.prepare_endpoints(cla, f"ClusterLoadAssignment '{name}'")
                except ConfigError as e:
                    errors[name] = str(e)
        if errors:
            for name in errors:
                for c in index.get(name, ()):
                    c.stats.counter("update_rejected").inc()
            raise api.UpdateRejected(errors)
        warmed = []
        for name, cla in update.resources.items():
            version = _version_of(update, name)
            self.cache[name] = (cla, version, now)
            for c in index.get(name, ()):
                c.update_endpoints(cla, prepared[id(c)], version=version, now=now)
                c.stats.update_success.inc()
                if not c.hosts:
                    c.stats.update_empty.inc()
                warmed.append(c)
        for name in update.removed:
            self.cache.pop(name, None)
            empty = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
            for c in index.get(name, ()):
                c.update_endpoints(empty, version=_version_of(update, name), now=now)
                warmed.append(c)
        self.initialized.set()
        for c in warmed:
            self.owner.cds.cluster_warmed(c)

    def on_fetch_timeout(self) -> None:
        self.initialized.set()
        for c in list(self.owner.cm.warming.values()):
            self.owner.cds.cluster_warmed(c, timed_out=True)


# --------------------------------------------------------------------------------------------------
# CDS
# --------------------------------------------------------------------------------------------------


class _WildcardHandler:
    """What CDS and LDS share: whole batches applied under the owner's config lock (so the two never
    interleave), Envoy's batch stats, and which dynamic resources a batch removes."""

    owner: XdsHandlers
    batch_stats: _BatchStats

    def _dynamic_names(self) -> set[str]:
        raise NotImplementedError

    async def _apply(self, update: api.ResourceUpdate) -> None:
        raise NotImplementedError

    async def on_update(self, update: api.ResourceUpdate) -> None:
        self.owner.changing()
        async with self.owner.config_lock:
            await self.batch_stats.run(self._apply, update)

    def on_decode_error(self, exc) -> None:
        self.batch_stats.decode_error()

    def _applied(
        self, kind: str, update: api.ResourceUpdate, now: float, changed: int, removed: int, warming: int
    ) -> None:
        self.version_info = update.version_info
        self.last_updated = now
        self._first_applied = True
        event(
            log,
            logging.INFO,
            f"xds.{kind}.applied",
            changed=changed,
            removed=removed,
            warming=warming,
            version=update.version_info,
        )

    def _removed(self, update: api.ResourceUpdate) -> set[str]:
        """Delta names its removals; in SotW a wildcard type removes what the response leaves out."""
        if update.delta:
            return set(update.removed) & self._dynamic_names()
        return self._dynamic_names() - set(update.resources)


class CdsHandler(_WildcardHandler):
    type_url = api.CLUSTER
    wildcard = True

    def __init__(self, owner: XdsHandlers) -> None:
        self.owner = owner
        self.version_info = ""
        self.last_updated = 0.0
        self.initialized = _Initialized()
        self._first_applied = False
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self.batch_stats = _BatchStats(owner.stats.scope("cluster_manager.cds."))

    def _dynamic_names(self) -> set[str]:
        cm = self.owner.cm
        return {n for n, c in cm.clusters.items() if getattr(c, "dynamic", False)} | set(cm.warming)

    async def _apply(self, update: api.ResourceUpdate) -> None:
        from proxy.upstream.cluster import EdsCluster, build_cluster

        cm = self.owner.cm
        now = self.owner.clock()
        removed = self._removed(update)
        errors: dict[str, str] = {}
        built: dict[str, Any] = {}
        for name, proto in update.resources.items():
            if name in cm.static_names:
                errors[name] = (
                    f"cluster manager: a static cluster '{name}' cannot be updated or removed by CDS"
                )
                continue
            existing = cm.warming.get(name) or cm.clusters.get(name)
            if existing is not None and existing.proto == proto:
                continue  # Envoy ignores identical updates
            try:
                built[name] = build_cluster(proto, cm.ctx, f"Cluster '{name}'")
            except ConfigError as e:
                errors[name] = str(e)
        if errors:
            for c in built.values():
                c.drain()
            raise api.UpdateRejected(errors)

        # Start what needs starting (DNS resolves once) before anything is swapped.
        plain = [c for c in built.values() if not isinstance(c, EdsCluster)]
        if plain:
            await asyncio.gather(*(c.start() for c in plain))
        for name in removed:
            self._cancel_timer(name)
            cm.remove(name)
        for name, c in built.items():
            c.dynamic = True
            c.version_info = _version_of(update, name)
            c.last_updated = now
            self._cancel_timer(name)
            if isinstance(c, EdsCluster) and not self.owner.eds.warm_from_cache(c):
                cm.set_warming(c)
                if c.initial_fetch_timeout > 0:
                    loop = asyncio.get_running_loop()
                    self._timers[name] = loop.call_later(
                        c.initial_fetch_timeout, self.cluster_warmed, c, True
                    )
            else:
                cm.activate(c)
        self._applied("cds", update, now, len(built), len(removed), len(cm.warming))
        self.owner.eds.refresh_interest()
        self._check_initialized()

    def cluster_warmed(self, cluster, timed_out: bool = False) -> None:
        """A warming cluster got its endpoints (or gave up waiting): it replaces the active one."""
        cm = self.owner.cm
        if cm.warming.get(cluster.name) is not cluster:
            return
        self._cancel_timer(cluster.name)
        if timed_out:
            event(log, logging.WARNING, "xds.cds.warming_timeout", cluster=cluster.name)
        cm.activate(cluster)
        self._check_initialized()

    def _cancel_timer(self, name: str) -> None:
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()

    def _check_initialized(self) -> None:
        if self._first_applied and not self.owner.cm.warming:
            self.initialized.set()

    def on_fetch_timeout(self) -> None:
        self.batch_stats.fetch_timeout.inc()
        self.initialized.set()


# --------------------------------------------------------------------------------------------------
# LDS
# --------------------------------------------------------------------------------------------------


class LdsHandler(_WildcardHandler):
    type_url = api.LISTENER
    wildcard = True

    def __init__(self, owner: XdsHandlers) -> None:
        self.owner = owner
        self.version_info = ""
        self.last_updated = 0.0
        self.initialized = _Initialized()
        self._first_applied = False
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._lock = owner.config_lock  # shared with CDS (see XdsHandlers)
        self.batch_stats = _BatchStats(owner.stats.scope("listener_manager.lds."))

    def _dynamic_names(self) -> set[str]:
        lm = self.owner.lm
        return {listener.name for listener in lm.listeners if listener.dynamic} | set(lm.warming)

    def _validate(self, update: api.ResourceUpdate, removed: set[str]):
        """Build every changed listener and claim new addresses; returns (built, take_from, errors)."""
        lm = self.owner.lm
        rds = self.owner.rds
        errors: dict[str, str] = {}
        built: dict[str, Any] = {}
        for name, proto in update.resources.items():
            if name in lm.static_names:
                errors[name] = f"cannot update static listener '{name}' through LDS"
                continue
            existing = lm.warming.get(name) or lm.get(name)
            if existing is not None and existing.proto == proto:
                continue
            try:
                with rds.collect() as names:
                    listener = lm.build(proto, f"Listener '{name}'")
                if listener.name != name:
                    raise ConfigError(f"Listener '{name}'.name", f"the resource is named '{name}'")
                listener.rds_names = set(names)
                built[name] = listener
            except ConfigError as e:
                errors[name] = str(e)

        # Sockets: an unchanged address is taken over at activation; a new one is bound now, so that
        # a port in use rejects the update instead of failing later.
        take_from: dict[str, Any] = {}
        claimed: dict[tuple[str, int], str] = {}
        leaving = {n: lm.get(n) for n in removed if lm.get(n) is not None}
        for name, listener in built.items():
            if not listener.bind_to_port:
                continue
            active, warming = lm.get(name), lm.warming.get(name)
            if active is not None and listener.same_socket_as(active):
                continue
            if warming is not None and listener.same_socket_as(warming):
                take_from[name] = warming
                continue
            donor = next((old for old in leaving.values() if listener.same_socket_as(old)), None)
            if donor is not None and donor not in take_from.values():
                take_from[name] = donor
                continue
            key = (listener.host, listener.port)
            if listener.port and key in claimed:
                errors[name] = f"address {listener.address_str} is also used by listener '{claimed[key]}'"
                continue
            owner = lm.address_owner(listener, ignore=set(built) | set(leaving))
            if owner is not None:
                errors[name] = (
                    f"error adding listener '{name}': address {listener.address_str} is already used by "
                    f"listener '{owner.name}'"
                )
                continue
            try:
                listener.bind()
            except OSError as e:
                errors[name] = f"error adding listener '{name}': {e.strerror or e}"
                continue
            claimed[key] = name
        if errors:
            for listener in built.values():
                if listener.sock is not None and listener.server is None:
                    listener.stop_accepting()
        return built, take_from, errors

    async def _apply(self, update: api.ResourceUpdate) -> None:
        lm = self.owner.lm
        now = self.owner.clock()
        removed = self._removed(update)
        built, take_from, errors = self._validate(update, removed)
        if errors:
            self.owner.rds.refresh_interest()  # forget route names only the rejected listeners used
            raise api.UpdateRejected(errors)

        for name, listener in built.items():
            donor = take_from.get(name)
            if donor is not None:
                listener.take_socket_from(donor)
        for name in removed:
            if name not in built:
                self._cancel_timer(name)
                lm.remove(name)
        activate = []
        for name, listener in built.items():
            listener.dynamic = True
            listener.version_info = _version_of(update, name)
            listener.last_updated = now
            self._cancel_timer(name)
            if self.owner.rds.ready(listener.rds_names):
                activate.append(listener)
            else:
                lm.set_warming(listener)
                timeout = self._warming_timeout(listener)
                if timeout > 0:
                    loop = asyncio.get_running_loop()
                    self._timers[name] = loop.call_later(
                        timeout, lambda li=listener: self.owner.spawn(self._warming_timed_out(li))
                    )
        for listener in activate:
            await self._activate(listener)
        self._applied("lds", update, now, len(built), len(removed), len(lm.warming))
        self.owner.rds.refresh_interest()
        self._check_initialized()

    def _warming_timeout(self, listener) -> float:
        subs = self.owner.rds.subscriptions
        timeouts = [subs[n].initial_fetch_timeout for n in listener.rds_names if n in subs]
        return min(timeouts) if timeouts and all(t > 0 for t in timeouts) else 0.0

    async def _activate(self, listener) -> None:
        lm = self.owner.lm
        self._cancel_timer(listener.name)
        try:
            await lm.activate(listener)
        except OSError as e:  # the address was taken meanwhile: keep the old listener serving
            event(log, logging.ERROR, "xds.lds.activate_failed", listener=listener.name, error=str(e))
            if lm.warming.get(listener.name) is listener:
                del lm.warming[listener.name]
            listener.stop_accepting()

    async def on_routes_changed(self) -> None:
        """RDS delivered: warming listeners whose routes are all there go into service."""
        async with self._lock:
            lm = self.owner.lm
            for listener in list(lm.warming.values()):
                if self.owner.rds.ready(listener.rds_names):
                    await self._activate(listener)
            self._check_initialized()

    async def _warming_timed_out(self, listener) -> None:
        async with self._lock:
            lm = self.owner.lm
            if lm.warming.get(listener.name) is listener:
                event(log, logging.WARNING, "xds.lds.warming_timeout", listener=listener.name)
                await self._activate(listener)
            self._check_initialized()

    async def activate_all_warming(self, why: str) -> None:
        async with self._lock:
            for listener in list(self.owner.lm.warming.values()):
                event(log, logging.WARNING, "xds.lds.warming_timeout", listener=listener.name, reason=why)
                await self._activate(listener)
            self._check_initialized()

    def _cancel_timer(self, name: str) -> None:
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()

    def _check_initialized(self) -> None:
        if self._first_applied and not self.owner.lm.warming:
            self.initialized.set()

    def on_fetch_timeout(self) -> None:
        self.batch_stats.fetch_timeout.inc()
        self.initialized.set()
