"""Push requests and the debounce that merges them (pure; the clock is passed in).

As Istio's ``debounce`` in ``pilot/pkg/xds/discovery.go``: after an event, wait until no new event
arrived for ``after`` seconds (the quiet period), but never longer than ``max_wait`` seconds after the
first event of the batch. Everything that arrived meanwhile is merged into one ``PushRequest``, and one
PushContext is built for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pilot.model.config import ConfigKey


@dataclass(frozen=True)
class PushRequest:
    """What changed. ``full=False`` means only endpoints changed: an EDS push for ``eds_hosts``.

    ``config_keys`` names the changed configs; ``None`` means "anything may have changed" (a full push
    to everyone, e.g. at start or when services in the registry changed). ``services`` names registry
    services that were added, changed or removed.
    """

    full: bool = True
    config_keys: frozenset[ConfigKey] | None = None
    services: frozenset[str] = frozenset()
    eds_hosts: frozenset[str] = frozenset()
    reasons: frozenset[str] = frozenset()
    start: float = 0.0  # clock time of the earliest event merged in (for pilot_proxy_convergence_time)
    count: int = 1  # how many events were merged

    def merge(self, other: PushRequest) -> PushRequest:
        if self.full and other.full:
            keys = (
                None
                if self.config_keys is None or other.config_keys is None
                else self.config_keys | other.config_keys
            )
        elif self.full:
            keys = self.config_keys
        elif other.full:
            keys = other.config_keys
        else:
            keys = frozenset()
        return PushRequest(
            full=self.full or other.full,
            config_keys=keys,
            services=self.services | other.services,
            eds_hosts=self.eds_hosts | other.eds_hosts,
            reasons=self.reasons | other.reasons,
            start=min(self.start, other.start),
            count=self.count + other.count,
        )


def config_push(keys, now: float) -> PushRequest:
    return PushRequest(full=True, config_keys=frozenset(keys), reasons=frozenset({"config"}), start=now)


def endpoint_push(hosts, now: float) -> PushRequest:
    return PushRequest(
        full=False,
        config_keys=frozenset(),
        eds_hosts=frozenset(hosts),
        reasons=frozenset({"endpoints"}),
        start=now,
    )


def service_push(hosts, now: float) -> PushRequest:
    return PushRequest(
        full=True,
        config_keys=frozenset(),
        services=frozenset(hosts),
        reasons=frozenset({"services"}),
        start=now,
    )


@dataclass
class Debouncer:
    """Debounce state machine. ``add`` events, ask ``deadline()`` when to look again, ``take`` when due."""

    after: float = 0.1
    max_wait: float = 1.0
    pending: PushRequest | None = None
    first_at: float | None = None
    last_at: float | None = None
    merged_total: int = field(default=0)

    def __post_init__(self) -> None:
        if self.after < 0 or self.max_wait < 0:
            raise ValueError("debounce durations must not be negative")

    def add(self, request: PushRequest, now: float) -> None:
        self.pending = request if self.pending is None else self.pending.merge(request)
        if self.first_at is None:
            self.first_at = now
        self.last_at = now

    def deadline(self) -> float | None:
        """When the pending batch becomes due (None when nothing is pending)."""
        if self.pending is None:
            return None
        return min(self.last_at + self.after, self.first_at + self.max_wait)

    def due(self, now: float) -> bool:
        deadline = self.deadline()
        return deadline is not None and now >= deadline

    def take(self) -> PushRequest | None:
        request, self.pending, self.first_at, self.last_at = self.pending, None, None, None
        if request is not None:
            self.merged_total += request.count
        return request
