"""The contract between the xDS client (``proxy/xds/client.py``) and the proxy's config consumers
(the handlers in ``proxy/xds/handlers.py`` that apply listeners, clusters, routes and endpoints).

The client owns the gRPC stream (SotW ``StreamAggregatedResources`` or Delta
``DeltaAggregatedResources``), nonces, versions, ACK/NACK, reconnection with jittered back-off and
resynchronisation. It knows nothing about what a Listener means. A handler owns one type URL: it
validates a batch of resources and applies it atomically, or raises to have the batch NACKed while
the last good config stays in force.

Subscriptions follow need: handlers for LDS and CDS are wildcard; RDS and EDS handlers call
``client.set_interest(type_url, names)`` as HCMs and EDS clusters come and go, and the client sends
the new subscription (SotW: a DiscoveryRequest with the full name list; Delta: subscribe/unsubscribe
lists). Envoy's order is kept: CDS before EDS, LDS before RDS; a cluster warms until its endpoints
arrive and a listener until its routes arrive, bounded by ``initial_fetch_timeout``.

Who counts what (so that no stat is counted twice): the client counts ``control_plane.*`` only. Each
handler counts its type's update stats under Envoy's names, whether a batch is applied or rejected
(including ``on_decode_error``): ``listener_manager.lds.*`` and ``cluster_manager.cds.*``
(``update_attempt``, ``update_success``, ``update_rejected``, ``init_fetch_timeout``), and per resource
``http.<stat_prefix>.rds.<route_config_name>.*`` and ``cluster.<name>.update_attempt/update_success/
update_rejected/update_empty``.

Initialisation: handlers expose ``initialized`` (an ``asyncio.Event``-like ``wait()``able set once the
first batch was applied and its resources warmed, or ``on_fetch_timeout`` passed); the server goes LIVE
once CDS and LDS are initialized, as Envoy does.

Client side (``proxy/xds/client.py``, ``proxy/xds/config.py``), added by the client's author:

* Construction: ``XdsClient(node, ads_config, stats)`` with ``ads_config =
  proxy.xds.config.ads_config_from_bootstrap(bootstrap)`` (None without ``dynamic_resources``; raises
  ``ConfigError`` naming the field for anything unsupported). ``ads_config.lds``/``.cds`` say whether
  ``lds_config``/``cds_config`` are ``ads: {}``; ``proxy.xds.config.config_source_timeout(source,
  path)`` checks an HCM ``rds.config_source`` or an ``eds_cluster_config.eds_config`` the same way.
  ``register`` every handler before ``start()``.
* ``set_interest`` is called on the event loop (typically from inside ``on_update``); it never blocks.
* Handler calls are serialised per type URL (one batch fully applied before the next of that type);
  different types run concurrently, so a CDS handler may await its clusters' endpoints.
* ``on_update`` raising anything NACKs the batch: ``UpdateRejected`` (one line per resource),
  ``ConfigError`` (its field path), any other exception (logged as a bug, still NACKed).
  error_detail is ``google.rpc.Status(code=INVALID_ARGUMENT, message="<LDS|CDS|RDS|EDS> update
  rejected:\n<name>: <problem>\n...")``.
* Optional handler attributes: ``initial_fetch_timeout`` (seconds, 0 = none; default: the bootstrap's
  ``lds_config``/``cds_config`` value, else 15 s) and ``on_decode_error(exc)``, called when a response
  cannot even be decoded (the client NACKs it without calling ``on_update``), so the handler can count
  ``update_rejected``. ``on_fetch_timeout`` fires once per type when nothing arrived in time, and again
  if ``set_interest`` later adds names and no response follows in time: keep it idempotent.
* Delta ``ResourceUpdate.removed`` may name resources the handler never had; ignore those.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from google.protobuf.message import Message

TYPE_PREFIX = "type.googleapis.com/"
LISTENER = TYPE_PREFIX + "envoy.config.listener.v3.Listener"
CLUSTER = TYPE_PREFIX + "envoy.config.cluster.v3.Cluster"
ROUTE = TYPE_PREFIX + "envoy.config.route.v3.RouteConfiguration"
ENDPOINT = TYPE_PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
SECRET = TYPE_PREFIX + "envoy.extensions.transport_sockets.tls.v3.Secret"

# Order in which the client (re)subscribes on a fresh stream, as Envoy does.
SUBSCRIBE_ORDER = (CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET)


class UpdateRejected(Exception):
    """Raised by a handler to NACK a batch. `errors` maps resource name -> message; the NACK's
    error_detail names each resource and its problem."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{name}: {msg}" for name, msg in errors.items()))
        self.errors = errors


@dataclass
class ResourceUpdate:
    """One batch from the control plane for one type URL.

    SotW (``delta=False``): `resources` is everything the server sent in this response. For the
    wildcard types (LDS, CDS) a name missing from it has been removed; for RDS and EDS absence means
    nothing, as in Envoy. Delta (``delta=True``): `resources` are the added or changed ones and
    `removed` names the removed ones. `versions` is each resource's version (Delta) or the response's
    version_info for all (SotW).
    """

    type_url: str
    version_info: str
    resources: dict[str, Message]
    removed: set[str] = field(default_factory=set)
    delta: bool = False
    versions: dict[str, str] = field(default_factory=dict)


class TypeHandler(Protocol):
    type_url: str
    wildcard: bool  # LDS and CDS subscribe to everything

    async def on_update(self, update: ResourceUpdate) -> None:
        """Validate and apply the batch atomically; raise UpdateRejected (or ConfigError) to NACK."""

    def on_fetch_timeout(self) -> None:
        """initial_fetch_timeout passed without a response: stop waiting (warm with what there is)."""


class XdsClientApi(Protocol):
    connected: bool

    def register(self, handler: TypeHandler) -> None: ...
    def set_interest(self, type_url: str, names: set[str]) -> None: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
