"""Route and virtual-host ``rate_limits`` (``envoy.config.route.v3.RateLimit``), compiled once.

A policy entry has a ``stage`` and a list of actions; for a request each action yields one descriptor
entry (key, value) or nothing. As in Envoy's ``RateLimitPolicyEntryImpl::populateDescriptors``, one
action that cannot produce its entry (a missing header without ``skip_if_absent``, a
``header_value_match`` that does not match) drops the whole descriptor; an entry with no actions
producing anything yields no descriptor.

Actions implemented: ``source_cluster``, ``destination_cluster``, ``request_headers``,
``remote_address``, ``generic_key``, ``header_value_match``. Everything else is a ConfigError.
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from proxy.config.errors import ConfigError
from proxy.config.supported import reject_unsupported
from proxy.core.headers import Headers
from proxy.router.matchers import HeaderMatcher

Entry = tuple[str, str]
Descriptor = tuple[Entry, ...]

RATE_LIMIT_SPEC = {
    "stage": True,
    "actions": {
        "source_cluster": True,
        "destination_cluster": True,
        "request_headers": {"header_name": True, "descriptor_key": True, "skip_if_absent": True},
        "remote_address": True,
        "generic_key": {"descriptor_value": True, "descriptor_key": True},
        "header_value_match": {
            "descriptor_key": True,
            "descriptor_value": True,
            "expect_match": True,
            "headers": True,
        },
    },
}

_SKIP = object()  # the action contributes nothing, the descriptor goes on
_DROP = None  # the descriptor is not produced


@dataclass(frozen=True, slots=True)
class DescriptorContext:
    """What the actions read for one request."""

    headers: Headers
    local_cluster: str  # the proxy's --service-cluster / node.cluster
    route_cluster: str  # the route's target cluster
    remote_address: str  # the downstream client's IP (XFF-aware, as the HCM computed it)


Action = Callable[[DescriptorContext], "Entry | object | None"]


def _source_cluster(ctx: DescriptorContext):
    return ("source_cluster", ctx.local_cluster)


def _destination_cluster(ctx: DescriptorContext):
    return ("destination_cluster", ctx.route_cluster)


def _remote_address(ctx: DescriptorContext):
    return ("remote_address", ctx.remote_address) if ctx.remote_address else _DROP


def _request_headers(msg, path: str) -> Action:
    if not msg.header_name or not msg.descriptor_key:
        raise ConfigError(path, "request_headers needs header_name and descriptor_key")
    name, key, skip = msg.header_name.lower(), msg.descriptor_key, msg.skip_if_absent

    def action(ctx: DescriptorContext):
        values = ctx.headers.get_all(name)
        if not values:
            return _SKIP if skip else _DROP
        return (key, ",".join(values))

    return action


def _generic_key(msg, path: str) -> Action:
    if not msg.descriptor_value:
        raise ConfigError(f"{path}.descriptor_value", "generic_key needs a descriptor_value")
    entry = (msg.descriptor_key or "generic_key", msg.descriptor_value)
    return lambda ctx: entry


def _header_value_match(msg, path: str) -> Action:
    if not msg.descriptor_value:
        raise ConfigError(f"{path}.descriptor_value", "header_value_match needs a descriptor_value")
    if not msg.headers:
        raise ConfigError(f"{path}.headers", "header_value_match needs at least one header matcher")
    matchers = tuple(HeaderMatcher(h, f"{path}.headers[{i}]") for i, h in enumerate(msg.headers))
    expect = msg.expect_match.value if msg.HasField("expect_match") else True
    entry = (msg.descriptor_key or "header_match", msg.descriptor_value)

    def action(ctx: DescriptorContext):
        matched = all(m.matches(ctx.headers) for m in matchers)
        return entry if matched == expect else _DROP

    return action


def _compile_action(msg, path: str) -> Action:
    kind = msg.WhichOneof("action_specifier")
    if kind == "source_cluster":
        return _source_cluster
    if kind == "destination_cluster":
        return _destination_cluster
    if kind == "remote_address":
        return _remote_address
    if kind == "request_headers":
        return _request_headers(msg.request_headers, f"{path}.request_headers")
    if kind == "generic_key":
        return _generic_key(msg.generic_key, f"{path}.generic_key")
    if kind == "header_value_match":
        return _header_value_match(msg.header_value_match, f"{path}.header_value_match")
    raise ConfigError(path, "a rate limit action needs one of the supported action specifiers")


@dataclass(frozen=True, slots=True)
class RateLimitEntry:
    stage: int
    actions: tuple[Action, ...]

    def descriptor(self, ctx: DescriptorContext) -> Descriptor | None:
        entries: list[Entry] = []
        for action in self.actions:
            out = action(ctx)
            if out is _DROP:
                return None
            if out is _SKIP:
                continue
            entries.append(out)
        return tuple(entries) if entries else None


def compile_rate_limits(msgs, path: str) -> tuple[RateLimitEntry, ...]:
    """A repeated RateLimit field -> compiled entries; raises ConfigError naming the field."""
    out = []
    for i, msg in enumerate(msgs):
        here = f"{path}[{i}]"
        reject_unsupported(msg, RATE_LIMIT_SPEC, here)
        stage = msg.stage.value if msg.HasField("stage") else 0
        if stage > 10:
            raise ConfigError(f"{here}.stage", "stage must be between 0 and 10")
        if not msg.actions:
            raise ConfigError(f"{here}.actions", "a rate limit needs at least one action")
        actions = tuple(_compile_action(a, f"{here}.actions[{j}]") for j, a in enumerate(msg.actions))
        out.append(RateLimitEntry(stage, actions))
    return tuple(out)


def descriptors_for(
    entries: tuple[RateLimitEntry, ...], stage: int, ctx: DescriptorContext
) -> list[Descriptor]:
    result = []
    for e in entries:
        if e.stage == stage:
            d = e.descriptor(ctx)
            if d is not None:
                result.append(d)
    return result
