"""Clusters: configuration, membership (static, DNS, original destination), host choice, pools.

A ``Cluster`` is built from an ``envoy.config.cluster.v3.Cluster`` (kept as ``.proto`` for the admin
config dump) by ``build_cluster``. Membership changes (DNS refresh, ORIGINAL_DST hosts) swap in a new
immutable load balancer; pools of removed hosts are drained.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import health_check_pb2

from proxy.config.errors import ConfigError
from proxy.upstream import dns
from proxy.upstream.cluster_stats import ClusterStats
from proxy.upstream.config import bind_source_address, check_cluster, check_protocol_options
from proxy.upstream.errors import PoolOverflow, UpstreamConnectError
from proxy.upstream.host import DEGRADED_EDS_HEALTH, FAILED_EDS_HEALTH, Host
from proxy.upstream.lb import (
    DEFAULT_MAX_RING_SIZE,
    DEFAULT_MIN_RING_SIZE,
    HostSet,
    LbConfig,
    LbContext,
    PriorityLoadBalancer,
)
from proxy.upstream.pool import DEFAULT_BUFFER_LIMIT, DEFAULT_IDLE_TIMEOUT, HttpConnectionPool, PoolSettings
from proxy.upstream.resources import ResourceManager

log = logging.getLogger(__name__)

DEFAULT_DNS_REFRESH_RATE = 5.0
DEFAULT_CLEANUP_INTERVAL = 5.0
ORIGINAL_DST_HEADER = "x-envoy-original-dst-host"

_TYPE_NAMES = dict(cluster_pb2.Cluster.DiscoveryType.items())
_TYPE_BY_VALUE = {v: k for k, v in _TYPE_NAMES.items()}
_LB_BY_VALUE = {v: k for k, v in cluster_pb2.Cluster.LbPolicy.items()}
_FAMILY_BY_VALUE = {v: k for k, v in cluster_pb2.Cluster.DnsLookupFamily.items()}
_PRIORITY_NAMES = {0: "default", 1: "high"}


def _seconds(duration) -> float:
    return duration.seconds + duration.nanos / 1e9


# ------------------------------------------------------------------------------------------------
# Endpoints from load_assignment.


class EndpointSpec:
    """One configured lb_endpoint (before DNS): what every host made from it inherits."""

    __slots__ = (
        "address",
        "port",
        "weight",
        "priority",
        "locality",
        "locality_weight",
        "locality_index",
        "health_flags",
        "hostname",
        "metadata",
        "path",
        "pipe",
    )

    def __init__(self, **kw) -> None:
        for k, v in kw.items():
            setattr(self, k, v)


def parse_endpoints(cluster: cluster_pb2.Cluster, path: str, allow_pipe: bool = False) -> list[EndpointSpec]:
    return parse_assignment(cluster.load_assignment, f"{path}.load_assignment", allow_pipe)


def parse_assignment(la, path: str, allow_pipe: bool = False) -> list[EndpointSpec]:
    """The endpoints of a ClusterLoadAssignment (inline ``load_assignment`` or from EDS). A ``pipe``
    address (a Unix socket, kept as ``(path, 0)``) only where `allow_pipe` (STATIC clusters)."""
    specs = []
    for i, lle in enumerate(la.endpoints):
        lpath = f"{path}.endpoints[{i}]"
        locality_weight = lle.load_balancing_weight.value if lle.HasField("load_balancing_weight") else 0
        if lle.HasField("load_balancing_weight") and locality_weight < 1:
            raise ConfigError(f"{lpath}.load_balancing_weight", "must be at least 1")
        for j, lbe in enumerate(lle.lb_endpoints):
            epath = f"{lpath}.lb_endpoints[{j}]"
            sa = lbe.endpoint.address.socket_address
            pipe = lbe.endpoint.address.HasField("pipe")
            if pipe:
                if not allow_pipe:
                    raise ConfigError(
                        f"{epath}.endpoint.address.pipe",
                        "a pipe address is supported in STATIC clusters only",
                    )
                if not lbe.endpoint.address.pipe.path:
                    raise ConfigError(f"{epath}.endpoint.address.pipe.path", "a path is required")
            elif not lbe.endpoint.address.HasField("socket_address"):
                raise ConfigError(f"{epath}.endpoint.address", "a socket_address is required")
            if pipe:
                pass
            elif sa.protocol != 0:
                raise ConfigError(
                    f"{epath}.endpoint.address.socket_address.protocol", "only TCP is supported"
                )
            if not pipe and not sa.address:
                raise ConfigError(
                    f"{epath}.endpoint.address.socket_address.address", "an address is required"
                )
            if not pipe and not 0 < sa.port_value < 65536:
                raise ConfigError(
                    f"{epath}.endpoint.address.socket_address.port_value", "a port in 1..65535 is required"
                )
            weight = 1
            if lbe.HasField("load_balancing_weight"):
                weight = lbe.load_balancing_weight.value
                if weight < 1:
                    raise ConfigError(f"{epath}.load_balancing_weight", "must be at least 1")
            status = lbe.health_status
            flags: frozenset[str] = frozenset()
            if status in (health_check_pb2.UNHEALTHY, health_check_pb2.DRAINING, health_check_pb2.TIMEOUT):
                flags = frozenset({FAILED_EDS_HEALTH})
            elif status == health_check_pb2.DEGRADED:
                flags = frozenset({DEGRADED_EDS_HEALTH})
            specs.append(
                EndpointSpec(
                    address=lbe.endpoint.address.pipe.path if pipe else sa.address,
                    port=0 if pipe else sa.port_value,
                    pipe=pipe,
                    weight=weight,
                    priority=lle.priority,
                    locality=lle.locality if lle.HasField("locality") else None,
                    locality_weight=locality_weight,
                    locality_index=i,
                    health_flags=flags,
                    hostname=lbe.endpoint.hostname,
                    metadata=lbe.metadata if lbe.HasField("metadata") else None,
                    path=epath,
                )
            )
    return specs


def _make_host(spec: EndpointSpec, address: tuple[str, int], cluster_name: str) -> Host:
    return Host(
        address,
        weight=spec.weight,
        locality=spec.locality,
        priority=spec.priority,
        hostname=spec.hostname or (spec.address if not spec.pipe and not dns.is_ip(spec.address) else ""),
        health_flags=spec.health_flags,
        metadata=spec.metadata,
        cluster_name=cluster_name,
    )


def group_host_sets(hosts_with_specs: list[tuple[Host, EndpointSpec]]) -> list[HostSet]:
    """Hosts -> one HostSet per priority (lowest first), each with its localities in config order."""
    by_priority: dict[int, dict[int, tuple[Any, int, list[Host]]]] = {}
    for host, spec in hosts_with_specs:
        localities = by_priority.setdefault(spec.priority, {})
        entry = localities.get(spec.locality_index)
        if entry is None:
            entry = localities[spec.locality_index] = (spec.locality, spec.locality_weight, [])
        entry[2].append(host)
    sets = []
    for priority in sorted(by_priority):
        localities = [by_priority[priority][k] for k in sorted(by_priority[priority])]
        hosts = [h for _, _, hs in localities for h in hs]
        sets.append(HostSet(priority, hosts, localities))
    return sets


# ------------------------------------------------------------------------------------------------
# The cluster.


class Cluster:
    """What the router and tcp_proxy use: ``choose_host``, ``http_pool``, ``connect_tcp``, ``resources``."""

    type_name = "STATIC"

    def __init__(self, proto: cluster_pb2.Cluster, ctx, path: str) -> None:
        self.proto = proto
        self.name = proto.name
        self.path = path
        self.ctx = ctx
        stat_name = proto.alt_stat_name or proto.name
        self.stats = ClusterStats(ctx.stats.scope(f"cluster.{stat_name}."))
        self.stats_scope = self.stats.scope
        self.resource_managers = {
            0: ResourceManager(self.stats_scope, "default"),
            1: ResourceManager(self.stats_scope, "high"),
        }
        for t in proto.circuit_breakers.thresholds:
            self.resource_managers[t.priority] = ResourceManager.from_thresholds(
                t, self.stats_scope, _PRIORITY_NAMES.get(t.priority, str(t.priority))
            )
        self.resources = self.resource_managers[0]
        self.lb_config = _lb_config(proto, path)
        self.pool_settings = _pool_settings(proto, path)
        # envoy.transport_sockets.tls (UpstreamTlsContext): a TlsSocketFactory, or None (plaintext).
        self.transport_socket = None
        if proto.HasField("transport_socket"):
            from proxy.tls.transport_socket import build_transport_socket

            self.transport_socket = build_transport_socket(
                proto.transport_socket, ctx, f"{path}.transport_socket", upstream=True
            )
        # upstream_bind_config.source_address: the local (ip, port) every upstream connection binds.
        self.source_address = bind_source_address(proto, path)
        self.host_sets: list[HostSet] = []
        self._lb = PriorityLoadBalancer([], self.lb_config)
        self._pools: dict[int, HttpConnectionPool] = {}  # id(host) -> pool
        self._tasks: set[asyncio.Task] = set()
        self.closed = False
        self.ready = False
        # Set by the CDS handler for clusters that came from xDS (admin config dump).
        self.dynamic = False
        self.version_info = ""
        self.last_updated = 0.0

    # -- membership --------------------------------------------------------------------------
    @property
    def hosts(self) -> list[Host]:
        return [h for hs in self.host_sets for h in hs.hosts]

    def set_host_sets(self, host_sets: list[HostSet]) -> None:
        """Swap in new membership: a new load balancer, gauges, and drained pools for removed hosts."""
        old = {id(h): h for h in self.hosts}
        self.host_sets = host_sets
        self._lb = PriorityLoadBalancer(host_sets, self.lb_config)
        hosts = self.hosts
        current = {id(h) for h in hosts}
        for key, host in old.items():
            if key not in current:
                self._drain_host(host)
        stats = self.stats
        stats.membership_total.set(len(hosts))
        stats.membership_healthy.set(sum(1 for h in hosts if h.healthy))
        stats.membership_degraded.set(sum(1 for h in hosts if DEGRADED_EDS_HEALTH in h.health_flags))
        stats.max_host_weight.set(max((h.weight for h in hosts), default=0))
        if old.keys() != current:
            stats.membership_change.inc()

    def active_connections(self) -> int:
        return sum(p.active_connections for p in self._pools.values())

    def _drain_host(self, host: Host) -> None:
        pool = self._pools.pop(id(host), None)
        if pool is not None:
            pool.drain()

    # -- what the data path uses --------------------------------------------------------------
    def choose_host(self, ctx: LbContext | None = None) -> Host | None:
        """A host for this request, or None (the router answers 503 UH: no healthy upstream)."""
        return self._lb.choose(ctx)

    def http_pool(self, host: Host) -> HttpConnectionPool:
        pool = self._pools.get(id(host))
        if pool is None:
            pool = self._pools[id(host)] = HttpConnectionPool(
                host, self.pool_settings, self.stats, self.resources
            )
            pool.transport_socket = self.transport_socket
            pool.source_address = self.source_address
        return pool

    async def connect_tcp(self, host: Host, protocol_factory=None):
        """Open a TCP connection to `host` with the cluster's connect_timeout and circuit breaker.

        Returns ``(transport, protocol)`` like ``loop.create_connection``. Without `protocol_factory`
        the protocol is a ``TcpUpstream`` (a RawDuplex: ``write``, ``await read()``, ``close``).
        Connection stats (``upstream_cx_*``, per-host ``cx_*``) are kept until the connection closes.
        Raises PoolOverflow (max_connections; ``upstream_cx_overflow``) or UpstreamConnectError."""
        from proxy.upstream.tcp import open_tcp

        return await open_tcp(self, host, protocol_factory)

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Initial membership (DNS clusters resolve once before they are ready)."""
        self.ready = True

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def drain(self) -> None:
        """Stop background work and close idle connections; in-flight requests finish."""
        self.closed = True
        for task in list(self._tasks):
            task.cancel()
        for pool in self._pools.values():
            pool.drain()

    async def close(self) -> None:
        self.drain()
        for pool in list(self._pools.values()):
            await pool.close()
        self._pools.clear()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} hosts={len(self.hosts)}>"


class StaticCluster(Cluster):
    type_name = "STATIC"

    def __init__(self, proto, ctx, path) -> None:
        super().__init__(proto, ctx, path)
        specs = parse_endpoints(proto, path, allow_pipe=True)
        for spec in specs:
            if not spec.pipe and not dns.is_ip(spec.address):
                raise ConfigError(
                    f"{spec.path}.endpoint.address.socket_address.address",
                    f"malformed IP address: {spec.address} (a STATIC cluster needs IPs; use STRICT_DNS)",
                )
        self.set_host_sets(
            group_host_sets([(_make_host(s, (s.address, s.port), self.name), s) for s in specs])
        )


class _DnsCluster(Cluster):
    def __init__(self, proto, ctx, path) -> None:
        super().__init__(proto, ctx, path)
        self.specs = parse_endpoints(proto, path)
        self.refresh_rate = (
            _seconds(proto.dns_refresh_rate)
            if proto.HasField("dns_refresh_rate")
            else DEFAULT_DNS_REFRESH_RATE
        )
        if self.refresh_rate <= 0:
            raise ConfigError(f"{path}.dns_refresh_rate", "must be greater than 0")
        self.failure_refresh_rate = (
            _seconds(proto.dns_failure_refresh_rate.base_interval)
            if proto.HasField("dns_failure_refresh_rate")
            else self.refresh_rate
        )
        self.family = _FAMILY_BY_VALUE[proto.dns_lookup_family]

    async def start(self) -> None:
        await self.refresh()
        self.ready = True
        self._spawn(self._refresh_loop())

    async def _refresh_loop(self) -> None:
        ok = True
        while not self.closed:
            delay = self.refresh_rate if ok else self.failure_refresh_rate
            await asyncio.sleep(delay * random.uniform(0.9, 1.0) if delay > 1 else delay)
            ok = await self.refresh()

    async def _resolve_all(self) -> list[list[tuple[str, int]] | None]:
        async def one(spec):
            try:
                return await dns.resolve(spec.address, spec.port, self.family)
            except OSError as e:
                log.warning("cluster %s: DNS resolution of %s failed: %s", self.name, spec.address, e)
                return None

        return list(await asyncio.gather(*(one(s) for s in self.specs)))

    async def refresh(self) -> bool:
        raise NotImplementedError


class StrictDnsCluster(_DnsCluster):
    """Every address of every endpoint's name is a host; re-resolved every dns_refresh_rate."""

    type_name = "STRICT_DNS"

    def __init__(self, proto, ctx, path) -> None:
        super().__init__(proto, ctx, path)
        # Per endpoint: address -> Host, kept across refreshes so pools and stats survive.
        self._resolved: list[dict[tuple[str, int], Host]] = [{} for _ in self.specs]

    async def refresh(self) -> bool:
        self.stats.update_attempt.inc()
        results = await self._resolve_all()
        if self.closed:
            return False
        ok = all(r is not None for r in results)
        changed = False
        for i, addresses in enumerate(results):
            if addresses is None:
                continue  # keep the last good answer for this name
            old = self._resolved[i]
            new = {a: old.get(a) or _make_host(self.specs[i], a, self.name) for a in addresses}
            if new.keys() != old.keys():
                changed = True
            self._resolved[i] = new
        if changed or not self.ready:
            pairs = [(h, self.specs[i]) for i, m in enumerate(self._resolved) for h in m.values()]
            self.set_host_sets(group_host_sets(pairs))
        (self.stats.update_success if ok else self.stats.update_failure).inc()
        return ok


class LogicalDnsCluster(_DnsCluster):
    """One host whose address is the name's first answer, updated on each refresh."""

    type_name = "LOGICAL_DNS"

    def __init__(self, proto, ctx, path) -> None:
        super().__init__(proto, ctx, path)
        if len(proto.load_assignment.endpoints) != 1 or len(self.specs) != 1:
            raise ConfigError(
                f"{path}.load_assignment",
                "LOGICAL_DNS clusters must have a single locality_lb_endpoint and a single lb_endpoint",
            )
        self.host: Host | None = None

    async def refresh(self) -> bool:
        self.stats.update_attempt.inc()
        (addresses,) = await self._resolve_all()
        if self.closed:
            return False
        if addresses is None:
            self.stats.update_failure.inc()
            return False
        if self.host is None:
            self.host = _make_host(self.specs[0], addresses[0], self.name)
            self.set_host_sets(group_host_sets([(self.host, self.specs[0])]))
        elif self.host.address != addresses[0]:
            self.host.set_address(addresses[0])  # new connections go to the new address
        self.stats.update_success.inc()
        return True


class OriginalDstCluster(Cluster):
    """Hosts made on demand from the downstream connection's original destination (or the
    ``x-envoy-original-dst-host`` header with use_http_header), removed after an idle cleanup_interval."""

    type_name = "ORIGINAL_DST"

    def __init__(self, proto, ctx, path) -> None:
        super().__init__(proto, ctx, path)
        if proto.HasField("load_assignment"):
            raise ConfigError(
                f"{path}.load_assignment", "ORIGINAL_DST clusters must not have a load_assignment"
            )
        cfg = proto.original_dst_lb_config
        self.use_http_header = cfg.use_http_header
        self.header_name = (cfg.http_header_name or ORIGINAL_DST_HEADER).lower()
        self.port_override = (
            cfg.upstream_port_override.value if cfg.HasField("upstream_port_override") else None
        )
        self.cleanup_interval = (
            _seconds(proto.cleanup_interval)
            if proto.HasField("cleanup_interval")
            else DEFAULT_CLEANUP_INTERVAL
        )
        self._by_address: dict[tuple[str, int], Host] = {}

    async def start(self) -> None:
        self.ready = True
        self._spawn(self._cleanup_loop())

    def _destination(self, ctx: LbContext | None) -> tuple[str, int] | None:
        if ctx is None:
            return None
        if self.use_http_header and ctx.headers is not None:
            value = ctx.headers.get(self.header_name)
            if value:
                parsed = _parse_host_port(value)
                if parsed is not None:
                    return parsed
        conn = ctx.downstream_connection
        if conn is None:
            return None
        dst = getattr(conn, "original_dst", None) or getattr(conn, "local_address", None)
        return (dst[0], dst[1]) if dst else None

    def choose_host(self, ctx: LbContext | None = None) -> Host | None:
        dst = self._destination(ctx)
        if dst is None:
            return None
        if self.port_override is not None:
            dst = (dst[0], self.port_override)
        host = self._by_address.get(dst)
        if host is None:
            host = self._by_address[dst] = Host(dst, cluster_name=self.name)
            self._publish()
        host.used = True
        return host

    def _publish(self) -> None:
        self.set_host_sets([HostSet(0, list(self._by_address.values()))] if self._by_address else [])

    def cleanup(self) -> None:
        """Remove hosts not used since the previous sweep (and with no request in flight)."""
        removed = False
        for addr, host in list(self._by_address.items()):
            if not host.used and host.stats.rq_active == 0:
                del self._by_address[addr]
                removed = True
            else:
                host.used = False
        if removed:
            self._publish()

    async def _cleanup_loop(self) -> None:
        while not self.closed:
            await asyncio.sleep(self.cleanup_interval)
            self.cleanup()


EDS_CONFIG_SOURCE_SPEC = {"ads": True, "initial_fetch_timeout": True, "resource_api_version": True}
CLA_SPEC = {
    "cluster_name": True,
    "endpoints": True,  # checked field by field below (same spec as an inline load_assignment)
    "policy": {"overprovisioning_factor": True},
}
DEFAULT_INITIAL_FETCH_TIMEOUT = 15.0


class EdsCluster(Cluster):
    """Membership from EDS (``ClusterLoadAssignment`` named ``eds_cluster_config.service_name``, or the
    cluster's name). The cluster warms until its first assignment arrives (the EDS handler calls
    ``update_endpoints``); hosts whose address is unchanged are kept across updates, with their
    pools and per-host stats."""

    type_name = "EDS"

    def __init__(self, proto, ctx, path) -> None:
        super().__init__(proto, ctx, path)
        if proto.HasField("load_assignment"):
            raise ConfigError(
                f"{path}.load_assignment",
                "an EDS cluster gets its endpoints from EDS; load_assignment must not be set",
            )
        ecc = proto.eds_cluster_config
        source = ecc.eds_config
        spath = f"{path}.eds_cluster_config.eds_config"
        from proxy.config.supported import reject_unsupported

        reject_unsupported(source, EDS_CONFIG_SOURCE_SPEC, spath)
        if not source.HasField("ads"):
            raise ConfigError(
                spath, "only ADS config sources ('ads: {}') are supported by Isthmus for EDS clusters"
            )
        if source.resource_api_version not in (0, 2):  # AUTO (means V3 today) or V3
            raise ConfigError(f"{spath}.resource_api_version", "only V3 is supported")
        self.service_name = ecc.service_name or proto.name
        self.initial_fetch_timeout = (
            _seconds(source.initial_fetch_timeout)
            if source.HasField("initial_fetch_timeout")
            else DEFAULT_INITIAL_FETCH_TIMEOUT
        )
        self.base_lb_config = self.lb_config
        self.assignment = None  # the ClusterLoadAssignment in force (None while warming)
        self.assignment_version = ""
        self.assignment_updated = 0.0
        self._by_address: dict[tuple[str, int], Host] = {}

    async def start(self) -> None:
        """Readiness comes from EDS (``update_endpoints``) or the warming timeout, not from here."""

    def prepare_endpoints(self, cla, path: str = "") -> tuple[list[EndpointSpec], LbConfig]:
        """Validate an assignment for this cluster (pure): raises ConfigError naming the field."""
        from proxy.config.supported import reject_unsupported

        path = path or f"ClusterLoadAssignment '{cla.cluster_name}'"
        reject_unsupported(cla, CLA_SPEC, path)
        from proxy.upstream.config import _ENDPOINTS

        for i, lle in enumerate(cla.endpoints):
            reject_unsupported(lle, _ENDPOINTS, f"{path}.endpoints[{i}]")
        specs = parse_assignment(cla, path)
        for spec in specs:
            if not dns.is_ip(spec.address):
                raise ConfigError(
                    f"{spec.path}.endpoint.address.socket_address.address",
                    f"malformed IP address: {spec.address} (EDS endpoints must be IP addresses)",
                )
        lb_config = self.base_lb_config
        if cla.policy.HasField("overprovisioning_factor"):
            factor = cla.policy.overprovisioning_factor.value
            if factor < 1:
                raise ConfigError(f"{path}.policy.overprovisioning_factor", "must be at least 1")
            lb_config = dataclasses.replace(lb_config, overprovisioning_factor=factor)
        return specs, lb_config

    def update_endpoints(self, cla, prepared=None, version: str = "", now: float = 0.0) -> None:
        """Swap in the assignment's hosts, keeping Host objects (pools, stats) of unchanged addresses."""
        specs, lb_config = prepared if prepared is not None else self.prepare_endpoints(cla)
        old = self._by_address
        by_address: dict[tuple[str, int], Host] = {}
        pairs = []
        for spec in specs:
            addr = (spec.address, spec.port)
            host = old.get(addr)
            if host is None or addr in by_address:
                host = _make_host(spec, addr, self.name)
            else:
                host.weight = max(1, spec.weight)
                host.priority = spec.priority
                host.locality = spec.locality
                host.metadata = spec.metadata
                host.health_flags = set(spec.health_flags)
            by_address.setdefault(addr, host)
            pairs.append((host, spec))
        self._by_address = by_address
        self.lb_config = lb_config
        self.assignment = cla
        self.assignment_version = version
        self.assignment_updated = now
        self.set_host_sets(group_host_sets(pairs))
        self.ready = True


def _parse_host_port(value: str) -> tuple[str, int] | None:
    value = value.strip()
    try:
        if value.startswith("["):
            host, _, port = value[1:].partition("]:")
        else:
            host, _, port = value.rpartition(":")
        if not host or not dns.is_ip(host):
            return None
        p = int(port)
        return (host, p) if 0 < p < 65536 else None
    except ValueError:
        return None


_CLUSTER_CLASSES = {
    "STATIC": StaticCluster,
    "STRICT_DNS": StrictDnsCluster,
    "LOGICAL_DNS": LogicalDnsCluster,
    "ORIGINAL_DST": OriginalDstCluster,
    "EDS": EdsCluster,
}


def build_cluster(proto: cluster_pb2.Cluster, ctx, path: str) -> Cluster:
    """Validate and build one cluster. Raises ConfigError naming the offending field."""
    check_cluster(proto, path)
    if not proto.name:
        raise ConfigError(f"{path}.name", "a cluster needs a name")
    type_name = _TYPE_BY_VALUE.get(proto.type, str(proto.type))
    if type_name != "EDS" and proto.HasField("eds_cluster_config"):
        raise ConfigError(
            f"{path}.eds_cluster_config", f"only EDS clusters take it (this one is {type_name})"
        )
    cls = _CLUSTER_CLASSES.get(type_name)
    if cls is None:
        raise ConfigError(f"{path}.type", f"cluster type {type_name} is not supported")
    lb = _LB_BY_VALUE.get(proto.lb_policy, str(proto.lb_policy))
    if type_name == "ORIGINAL_DST" and lb != "CLUSTER_PROVIDED":
        raise ConfigError(
            f"{path}.lb_policy",
            f"cluster: LB policy {lb} is not valid for Cluster type ORIGINAL_DST. Only "
            f"'CLUSTER_PROVIDED' is allowed with cluster type 'ORIGINAL_DST'",
        )
    if type_name != "ORIGINAL_DST" and lb == "CLUSTER_PROVIDED":
        raise ConfigError(
            f"{path}.lb_policy",
            f"cluster: LB policy CLUSTER_PROVIDED is not valid for Cluster type {type_name}",
        )
    return cls(proto, ctx, path)


def _lb_config(proto: cluster_pb2.Cluster, path: str) -> LbConfig:
    policy = _LB_BY_VALUE.get(proto.lb_policy, str(proto.lb_policy))
    if policy not in ("ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "RING_HASH", "MAGLEV", "CLUSTER_PROVIDED"):
        raise ConfigError(f"{path}.lb_policy", f"lb_policy {policy} is not supported")
    kw: dict[str, Any] = {"policy": policy if policy != "CLUSTER_PROVIDED" else "RANDOM"}
    rh = proto.ring_hash_lb_config
    if rh.HasField("minimum_ring_size"):
        kw["min_ring_size"] = rh.minimum_ring_size.value
    if rh.HasField("maximum_ring_size"):
        kw["max_ring_size"] = rh.maximum_ring_size.value
    min_ring = kw.get("min_ring_size", DEFAULT_MIN_RING_SIZE)
    max_ring = kw.get("max_ring_size", DEFAULT_MAX_RING_SIZE)
    if min_ring > max_ring:
        raise ConfigError(
            f"{path}.ring_hash_lb_config",
            f"ring hash: minimum_ring_size ({min_ring}) > maximum_ring_size ({max_ring})",
        )
    if max_ring > DEFAULT_MAX_RING_SIZE or min_ring < 1:
        raise ConfigError(
            f"{path}.ring_hash_lb_config", f"ring sizes must be within 1..{DEFAULT_MAX_RING_SIZE}"
        )
    if proto.maglev_lb_config.HasField("table_size"):
        size = proto.maglev_lb_config.table_size.value
        if size < 2 or any(size % d == 0 for d in range(2, int(size**0.5) + 1)):
            raise ConfigError(
                f"{path}.maglev_lb_config.table_size",
                f"the table size of maglev must be prime number (got {size})",
            )
        kw["maglev_table_size"] = size
    lr = proto.least_request_lb_config
    if lr.HasField("choice_count"):
        if lr.choice_count.value < 2:
            raise ConfigError(f"{path}.least_request_lb_config.choice_count", "must be at least 2")
        kw["choice_count"] = lr.choice_count.value
    if lr.HasField("active_request_bias"):
        kw["active_request_bias"] = lr.active_request_bias.default_value
    common = proto.common_lb_config
    if common.HasField("healthy_panic_threshold"):
        kw["panic_threshold"] = common.healthy_panic_threshold.value
    if common.HasField("locality_weighted_lb_config"):
        kw["locality_weighted"] = True
    policy_msg = proto.load_assignment.policy
    if policy_msg.HasField("overprovisioning_factor"):
        if policy_msg.overprovisioning_factor.value < 1:
            raise ConfigError(f"{path}.load_assignment.policy.overprovisioning_factor", "must be at least 1")
        kw["overprovisioning_factor"] = policy_msg.overprovisioning_factor.value
    return LbConfig(**kw)


def _pool_settings(proto: cluster_pb2.Cluster, path: str) -> PoolSettings:
    connect_timeout = _seconds(proto.connect_timeout) if proto.HasField("connect_timeout") else 5.0
    if connect_timeout <= 0:
        raise ConfigError(f"{path}.connect_timeout", "must be greater than 0")
    max_requests = (
        proto.max_requests_per_connection.value if proto.HasField("max_requests_per_connection") else 0
    )
    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT
    common = proto.common_http_protocol_options if proto.HasField("common_http_protocol_options") else None
    typed = check_protocol_options(proto, path)
    if typed is not None and typed.HasField("common_http_protocol_options"):
        common = typed.common_http_protocol_options  # the typed extension wins, as in Envoy
    if common is not None:
        if common.HasField("idle_timeout"):
            idle_timeout = _seconds(common.idle_timeout) or None  # 0 disables
        if common.HasField("max_requests_per_connection"):
            max_requests = common.max_requests_per_connection.value
    buffer_limit = (
        proto.per_connection_buffer_limit_bytes.value
        if proto.HasField("per_connection_buffer_limit_bytes")
        else DEFAULT_BUFFER_LIMIT
    )
    return PoolSettings(
        connect_timeout=connect_timeout,
        max_requests_per_connection=max_requests,
        idle_timeout=idle_timeout,
        buffer_limit=max(buffer_limit, 1024),
    )


__all__ = ["Cluster", "EdsCluster", "build_cluster", "LbContext", "PoolOverflow", "UpstreamConnectError"]
