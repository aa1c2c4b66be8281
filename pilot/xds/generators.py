"""Generators by type URL (Istio's ``XdsResourceGenerator``): each turns (proxy, push context, names)
into resources. All of them call the pure builders in ``pilot.networking``; the server never builds
config itself. A type without a generator is reported, never answered with an empty set silently.
"""

from __future__ import annotations

from collections.abc import Callable

from google.protobuf.message import Message

from pilot.model.proxy import Proxy
from pilot.model.push_context import PushContext
from pilot.xds import resources

# generate(type_url, proxy, push, names) -> list[Message]; names None = everything (wildcard)
GenerateFn = Callable[[str, Proxy, PushContext, "set[str] | None"], list[Message]]

SUPPORTED = (resources.CLUSTER, resources.ENDPOINT, resources.LISTENER, resources.ROUTE)


class UnsupportedType(LookupError):
    pass


def networking_generate(
    type_url: str, proxy: Proxy, push: PushContext, names: list[str] | None
) -> list[Message]:
    from pilot.networking import generate  # imported late: the builders are another module's

    return generate(type_url, proxy, push, names)


class Generators:
    def __init__(self, generate: GenerateFn | None = None, types=SUPPORTED) -> None:
        self._generate = generate or networking_generate
        self.types = frozenset(types)

    def supports(self, type_url: str) -> bool:
        return type_url in self.types

    def generate(
        self, type_url: str, proxy: Proxy, push: PushContext, names: list[str] | None
    ) -> list[Message]:
        if type_url not in self.types:
            raise UnsupportedType(f"pilot serves no {type_url} (supported: {', '.join(sorted(self.types))})")
        out = list(self._generate(type_url, proxy, push, set(names) if names is not None else None))
        if names is not None:  # answer only what was asked for (SotW RDS/EDS, named subscriptions)
            wanted = set(names)
            out = [m for m in out if resources.resource_name(m) in wanted]
        return out
