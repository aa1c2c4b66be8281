"""Circuit breakers: Envoy's per-cluster, per-priority ResourceManager.

The router and the connection pools consult these *before* doing any I/O::

    res = cluster.resources            # the DEFAULT priority's manager
    if not res.retries.can_create():   # -> cluster.<name>.upstream_rq_retry_overflow, no retry
        ...
    res.retries.inc(); ...; res.retries.dec()   # or: with res.retries: ...

``requests`` and ``pending_requests`` are charged by ``HttpConnectionPool.request`` (an overflow there
raises PoolOverflow, i.e. 503 UO); ``connections`` is charged by the pools and ``connect_tcp``.
Gauges follow Envoy: ``circuit_breakers.<priority>.{cx_open,cx_pool_open,rq_pending_open,rq_open,rq_retry_open}``
and, with ``track_remaining``, ``circuit_breakers.<priority>.remaining_{cx,cx_pools,pending,rq,retries}``.
"""

from __future__ import annotations

from proxy.stats.store import Gauge, Scope

# Envoy's defaults when a threshold is not set.
DEFAULT_MAX_CONNECTIONS = 1024
DEFAULT_MAX_PENDING_REQUESTS = 1024
DEFAULT_MAX_REQUESTS = 1024
DEFAULT_MAX_RETRIES = 3
UNLIMITED = 2**64 - 1


class Resource:
    """A counted resource with a maximum. `count` is the number in use right now."""

    __slots__ = ("max", "count", "_open", "_remaining")

    def __init__(
        self, maximum: int, open_gauge: Gauge | None = None, remaining_gauge: Gauge | None = None
    ) -> None:
        self.max = maximum
        self.count = 0
        self._open = open_gauge
        self._remaining = remaining_gauge
        self._update()

    def can_create(self) -> bool:
        return self.count < self.max

    # inc/dec set the gauges themselves (Envoy sets them on every change): no _update or Gauge.set
    # frames per change. tests/unit/proxy/upstream/test_resources_oracle.py holds them to the previous
    # implementation.
    def inc(self) -> None:
        c = self.count = self.count + 1
        g = self._open
        if g is not None:
            g.value = 1 if c >= self.max else 0
        g = self._remaining
        if g is not None:
            r = self.max - c
            g.value = r if r > 0 else 0

    def dec(self) -> None:
        c = self.count = self.count - 1
        g = self._open
        if g is not None:
            g.value = 1 if c >= self.max else 0
        g = self._remaining
        if g is not None:
            r = self.max - c
            g.value = r if r > 0 else 0

    def _update(self) -> None:
        if self._open is not None:
            self._open.set(1 if self.count >= self.max else 0)
        if self._remaining is not None:
            self._remaining.set(max(0, self.max - self.count))

    def __enter__(self) -> Resource:
        self.inc()
        return self

    def __exit__(self, *exc) -> None:
        self.dec()

    def __repr__(self) -> str:
        return f"Resource({self.count}/{self.max})"


class ResourceManager:
    __slots__ = ("connections", "pending_requests", "requests", "retries", "connection_pools")

    def __init__(
        self,
        scope: Scope | None,
        priority_name: str = "default",
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_pending_requests: int = DEFAULT_MAX_PENDING_REQUESTS,
        max_requests: int = DEFAULT_MAX_REQUESTS,
        max_retries: int = DEFAULT_MAX_RETRIES,
        max_connection_pools: int = UNLIMITED,
        track_remaining: bool = False,
    ) -> None:
        cb = scope.scope(f"circuit_breakers.{priority_name}.") if scope is not None else None

        def gauges(open_name: str, remaining_name: str) -> tuple[Gauge | None, Gauge | None]:
            if cb is None:
                return None, None
            return cb.gauge(open_name), (cb.gauge(remaining_name) if track_remaining else None)

        self.connections = Resource(max_connections, *gauges("cx_open", "remaining_cx"))
        self.pending_requests = Resource(
            max_pending_requests, *gauges("rq_pending_open", "remaining_pending")
        )
        self.requests = Resource(max_requests, *gauges("rq_open", "remaining_rq"))
        self.retries = Resource(max_retries, *gauges("rq_retry_open", "remaining_retries"))
        self.connection_pools = Resource(max_connection_pools, *gauges("cx_pool_open", "remaining_cx_pools"))

    @classmethod
    def from_thresholds(cls, thresholds, scope: Scope | None, priority_name: str) -> ResourceManager:
        """From an ``envoy.config.cluster.v3.CircuitBreakers.Thresholds`` (unset fields keep Envoy's defaults)."""

        def get(field: str, default: int) -> int:
            return (
                getattr(thresholds, field).value
                if thresholds is not None and thresholds.HasField(field)
                else default
            )

        return cls(
            scope,
            priority_name,
            max_connections=get("max_connections", DEFAULT_MAX_CONNECTIONS),
            max_pending_requests=get("max_pending_requests", DEFAULT_MAX_PENDING_REQUESTS),
            max_requests=get("max_requests", DEFAULT_MAX_REQUESTS),
            max_retries=get("max_retries", DEFAULT_MAX_RETRIES),
            max_connection_pools=get("max_connection_pools", UNLIMITED),
            track_remaining=bool(thresholds is not None and thresholds.track_remaining),
        )
