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

from pilot.model.proxy import Proxy
from pilot.model.push_context import PushContext
from pilot.xds import resources
from pilot.xds.cache import XdsCache
from pilot.xds.status import SYNCED, WatchState
from pilot.xds.wire import PreparedResponse

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
        self, watch: WatchState, push: PushContext, cache: XdsCache, now: float, always: bool = True
    ) -> PreparedResponse | None:
        """The whole state of the type. None (unless `always`, as for an answer to a request) when the
        proxy has ACKed exactly this content already: Envoy would take it as a no-op."""
        names = None if watch.wildcard else sorted(watch.names)
        built = cache.get(watch.type_url, self.proxy, names)
        digest = cache.digest(built)
        if not always and watch.content_sent == digest and watch.status == SYNCED:
            return None
        watch.content_sent = digest
        # the resources are the cache's encoded bytes, shared by every proxy of this shape (no copy)
        response = PreparedResponse(push.version, watch.type_url, new_nonce(), cache.body(built))
        watch.record_sent(push.version, response.nonce, now)
        return response

    # -- Delta --------------------------------------------------------------------------------------
    def delta_response(
        self, watch: WatchState, push: PushContext, cache: XdsCache, now: float, always: bool
    ) -> discovery_pb2.DeltaDiscoveryResponse | None:
        """Only what changed since what the proxy holds (ACKed versions plus responses in flight);
        None when nothing did (and not `always`, which the first answer to a subscription is)."""
        names = None if watch.wildcard else sorted(watch.names)
        current = {b.name: b for b in cache.get(watch.type_url, self.proxy, names)}
        response = discovery_pb2.DeltaDiscoveryResponse(
            system_version_info=push.version, type_url=watch.type_url, nonce=new_nonce()
        )
        known = watch.expected_versions()
        updated: dict[str, str] = {}
        for name in sorted(current):
            b = current[name]
            if known.get(name) == b.version:
                continue
            updated[name] = b.version
            response.resources.add(name=name, version=b.version, resource=b.resource)
        removed = sorted(n for n in known if n not in current and (watch.wildcard or n in watch.names))
        response.removed_resources.extend(removed)
        if not response.resources and not removed and not always:
            return None
        watch.record_delta_sent(response.nonce, updated, frozenset(removed))
        watch.record_sent(push.version, response.nonce, now)
        return response
