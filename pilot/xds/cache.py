"""The xDS cache (Istio's ``XdsCache``): generated resources, serialized once per push context and
per *proxy shape*, shared by every proxy of that shape.

Why: generating config (builders + ``json_format`` parsing) costs milliseconds per proxy and type, and
in a mesh most proxies would get byte-identical resources. A push round therefore builds each distinct
answer once and every response copies the cached, already serialized ``Any`` payloads.

Lifetime: one ``XdsCache`` per ``PushContext`` (kept in ``push.indexes[CACHE_KEY]``). A new push context
is a new, empty cache; the old one goes away with the old context. Nothing is ever invalidated in
place, so a stale entry can only be read by a push that still reads the old context, which is the
config it was built for.

The key is honest: it holds every input of the proxy the builders in ``pilot.networking`` read (see
``proxy_shape``), plus the type URL and the requested names. Anything else of the proxy (id, pod name,
labels no selector looks at, an IP that hosts no workload, other metadata) does not change the output,
so it is left out and proxies that differ only there share entries. If the builders start reading a
new proxy field, ``proxy_shape`` must learn it: ``XdsCache(verify=True)`` regenerates on every hit and
raises ``CacheMismatch`` on any difference (the unit tests run the golden fixtures through it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import any_pb2
from google.protobuf.message import Message

from pilot.model.proxy import Proxy
from pilot.model.push_context import PushContext
from pilot.xds import resources
from pilot.xds.wire import encode_resources

CACHE_KEY = "xds-cache"
TYPE_PREFIX = "type.googleapis.com/"

# Where Istio kinds select proxies by label (so a proxy's value for these keys can change its config):
# VirtualService http/tcp/tls ``match[].sourceLabels``; Sidecar, ServiceEntry, security kinds
# ``workloadSelector.labels``; Gateway ``selector``; security kinds ``selector.matchLabels``.
_SELECTOR_FIELDS = ("sourceLabels", "selector", "matchLabels")


@dataclass(frozen=True, slots=True)
class Built:
    """One generated resource: its xDS name, content version and the serialized ``Any``."""

    name: str
    version: str
    resource: any_pb2.Any


class CacheMismatch(AssertionError):
    """verify mode: a cached answer differs from a fresh one (the shape key misses an input)."""


def serialize(messages: Iterable[Message]) -> tuple[Built, ...]:
    """Serialize each message once (deterministic bytes), with its content hash as version."""
    out = []
    for message in messages:
        data = message.SerializeToString(deterministic=True)
        packed = any_pb2.Any(type_url=TYPE_PREFIX + message.DESCRIPTOR.full_name, value=data)
        out.append(Built(resources.resource_name(message), _hash(data), packed))
    return tuple(out)


def _hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def selector_label_keys(push: PushContext) -> frozenset[str]:
    """Every label key any config selects proxies by (see ``_SELECTOR_FIELDS``)."""
    keys: set[str] = set()
    for config in push.config.all():
        _collect_selector_keys(config.spec, keys, under_workload_selector=False)
    return frozenset(keys)


def _collect_selector_keys(value: Any, keys: set[str], under_workload_selector: bool) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, dict) and (k in _SELECTOR_FIELDS or (under_workload_selector and k == "labels")):
                keys.update(str(x) for x in v if x != "matchLabels")
            _collect_selector_keys(v, keys, under_workload_selector=k == "workloadSelector")
    elif isinstance(value, list):
        for v in value:
            _collect_selector_keys(v, keys, False)


def workloads_by_address(push: PushContext) -> dict[str, tuple]:
    """address -> the registry endpoints on it, as (service, service port, workload port): what the
    sidecar builders read to make the inbound listener chains and ``inbound|port||`` clusters."""
    out: dict[str, set] = {}
    for e in push.registry.endpoints:
        out.setdefault(e.address, set()).add((e.service, e.service_port, e.port))
    return {address: tuple(sorted(v)) for address, v in out.items()}


@dataclass
class ShapeInputs:
    """What the shape of a proxy depends on in one push context (computed once per context)."""

    label_keys: frozenset[str]
    workloads: dict[str, tuple]

    @classmethod
    def of(cls, push: PushContext) -> ShapeInputs:
        return cls(selector_label_keys(push), workloads_by_address(push))


def proxy_shape(inputs: ShapeInputs, proxy: Proxy, type_url: str) -> tuple:
    """The inputs of ``proxy`` that the builders for ``type_url`` read.

    * every type: the proxy type, its namespace (exportTo, Sidecar scope, DestinationRule lookup,
      short host names, ``sourceNamespace``) and its values for the selector label keys
      (``sourceLabels`` routes, Sidecar and Gateway selection);
    * LDS and CDS also read the proxy's IPs: the registry endpoints on them make a sidecar's inbound
      chains and clusters (whose address is the first IP), and with ``INTERCEPTION_MODE: NONE`` the
      listeners (sidecar and gateway) bind the first IP. IPs without workloads change nothing.
      In that mode ``ISTHMUS_APP_ADDRESS`` (where the app listens behind its sidecar) shapes the
      ingress listeners and the inbound clusters.
    """
    labels = proxy.labels
    shape: tuple = (
        proxy.type,
        proxy.namespace,
        tuple((k, labels.get(k)) for k in sorted(inputs.label_keys)),
    )
    if type_url in (resources.LISTENER, resources.CLUSTER):
        workloads = tuple(inputs.workloads.get(ip, ()) for ip in proxy.ip_addresses)
        first_ip = proxy.ip_addresses[0] if proxy.ip_addresses else None
        interception = str(proxy.metadata.get("INTERCEPTION_MODE") or "REDIRECT").upper()
        hosts_workload = any(workloads)
        shape += (
            workloads if hosts_workload else (),
            first_ip if hosts_workload or interception == "NONE" else None,
            interception == "NONE",
            str(proxy.metadata.get("ISTHMUS_APP_ADDRESS") or "") if interception == "NONE" else "",
        )
    return shape


GenerateFn = Callable[[str, Proxy, PushContext, "list[str] | None"], list[Message]]


@dataclass
class XdsCache:
    """Serialized resources of one push context, by (type URL, proxy shape, requested names)."""

    push: PushContext
    generate: GenerateFn
    verify: bool = False
    hits: int = 0
    misses: int = 0
    _inputs: ShapeInputs | None = None
    _entries: dict[tuple, tuple[Built, ...]] = field(default_factory=dict)
    _digests: dict[int, tuple[tuple[Built, ...], str]] = field(default_factory=dict)
    _bodies: dict[int, tuple[tuple[Built, ...], bytes]] = field(default_factory=dict)

    @property
    def inputs(self) -> ShapeInputs:
        if self._inputs is None:
            self._inputs = ShapeInputs.of(self.push)
        return self._inputs

    def __len__(self) -> int:
        return len(self._entries)

    def key(self, type_url: str, proxy: Proxy, names: list[str] | None) -> tuple:
        wanted = None if names is None else tuple(sorted(set(names)))
        return (type_url, proxy_shape(self.inputs, proxy, type_url), wanted)

    def get(self, type_url: str, proxy: Proxy, names: list[str] | None) -> tuple[Built, ...]:
        """The resources of ``type_url`` for ``proxy`` (``names`` None: all it should have)."""
        key = self.key(type_url, proxy, names)
        found = self._entries.get(key)
        if found is not None:
            self.hits += 1
            if self.verify:
                fresh = serialize(self.generate(type_url, proxy, self.push, names))
                if [(b.name, b.version) for b in fresh] != [(b.name, b.version) for b in found]:
                    raise CacheMismatch(
                        f"cached {resources.short_name(type_url)} for shape {key[1]!r} differs for proxy "
                        f"{proxy.id}: the shape key misses an input the builders read"
                    )
            return found
        self.misses += 1
        built = serialize(self.generate(type_url, proxy, self.push, names))
        self._entries[key] = built
        return built

    def digest(self, built: tuple[Built, ...]) -> str:
        """A digest of a whole answer (names and versions), computed once per cached entry."""
        key = id(built)
        found = self._digests.get(key)
        if found is None or found[0] is not built:
            text = "\n".join(f"{b.name}\t{b.version}" for b in built)
            found = self._digests[key] = (built, _hash(text.encode()))
        return found[1]

    def body(self, built: tuple[Built, ...]) -> bytes:
        """The answer's ``resources`` field as DiscoveryResponse bytes, encoded once per cached entry
        and shared by every SotW response that carries it (``pilot.xds.wire``)."""
        key = id(built)
        found = self._bodies.get(key)
        if found is None or found[0] is not built:
            found = self._bodies[key] = (built, encode_resources(b.resource for b in built))
        return found[1]

    def byte_size(self) -> int:
        """Bytes of serialized payloads held (shared entries counted once)."""
        seen: set[int] = set()
        total = 0
        for entry in self._entries.values():
            for b in entry:
                if id(b) not in seen:
                    seen.add(id(b))
                    total += len(b.resource.value)
        return total


def cache_for(push: PushContext, generate: GenerateFn, verify: bool = False) -> XdsCache:
    """The push context's cache, made on first use (one per context, dropped with it)."""
    cache = push.indexes.get(CACHE_KEY)
    if cache is None or cache.generate != generate or cache.verify != verify:
        cache = XdsCache(push, generate, verify=verify)
        push.indexes[CACHE_KEY] = cache
    return cache
