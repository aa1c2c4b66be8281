"""One ADS stream (SotW or Delta): the proxy behind it, its watches, and building its responses.

No gRPC here: responses are built and put on ``outbox``; the server writes them. ``lock`` serialises
responses to one stream, so a push and an answer to a request never interleave their nonces.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

from pilot.model.proxy import Proxy
from pilot.model.push_context import PushContext
from pilot.xds import resources
from pilot.xds.generators import Generators
from pilot.xds.status import WatchState

_nonces = itertools.count(1)


def new_nonce() -> str:
    return f"{next(_nonces):x}-{time.monotonic_ns() & 0xFFFFFF:x}"


@dataclass
class Connection:
    conn_id: str
    proxy: Proxy
    delta: bool
    peer: str = ""
    connected_at: float = field(default_factory=time.time)
    watches: dict[str, WatchState] = field(default_factory=dict)
    outbox: asyncio.Queue = field(default_factory=asyncio.Queue)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    pushes: int = 0

    def watched_eds(self) -> tuple[frozenset[str], bool]:
        watch = self.watches.get(resources.ENDPOINT)
        if watch is None:
            return frozenset(), False
        return watch.names, watch.wildcard

    # -- SotW ---------------------------------------------------------------------------------------
    def sotw_response(
        self, watch: WatchState, push: PushContext, generators: Generators, now: float
    ) -> discovery_pb2.DiscoveryResponse:
        names = None if watch.wildcard else sorted(watch.names)
        found = generators.generate(watch.type_url, self.proxy, push, names)
        response = discovery_pb2.DiscoveryResponse(
            version_info=push.version, type_url=watch.type_url, nonce=new_nonce()
        )
        for message in found:
            packed = any_pb2.Any()
            packed.Pack(message)
            response.resources.append(packed)
        watch.record_sent(push.version, response.nonce, now)
        return response

    # -- Delta --------------------------------------------------------------------------------------
    def delta_response(
        self, watch: WatchState, push: PushContext, generators: Generators, now: float, always: bool
    ) -> discovery_pb2.DeltaDiscoveryResponse | None:
        """Only what changed since the proxy's last known versions; None when nothing did (and not
        `always`, which the first answer to a subscription is)."""
        names = None if watch.wildcard else sorted(watch.names)
        found = generators.generate(watch.type_url, self.proxy, push, names)
        current: dict[str, tuple[str, object]] = {}
        for message in found:
            current[resources.resource_name(message)] = (resources.resource_version(message), message)
        response = discovery_pb2.DeltaDiscoveryResponse(
            system_version_info=push.version, type_url=watch.type_url, nonce=new_nonce()
        )
        known = watch.resource_versions
        for name in sorted(current):
            version, message = current[name]
            if known.get(name) == version:
                continue
            resource = discovery_pb2.Resource(name=name, version=version)
            resource.resource.Pack(message)
            response.resources.append(resource)
        removed = sorted(n for n in known if n not in current and (watch.wildcard or n in watch.names))
        response.removed_resources.extend(removed)
        if not response.resources and not removed and not always:
            return None
        watch.resource_versions = {name: v for name, (v, _) in current.items()}
        watch.record_sent(push.version, response.nonce, now)
        return response
