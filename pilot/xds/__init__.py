"""pilot's xDS server, as Istio's ``pilot/pkg/xds``.

Modules, pure logic first:

* ``resources``  type URLs, resource names, version hashes (pure)
* ``debounce``   ``PushRequest`` and its merge; the debounce state machine with an injectable clock (pure)
* ``pushqueue``  one push in flight per proxy; requests for a busy proxy coalesce (pure + an async wait)
* ``status``     per proxy and type URL: names watched, version/nonce sent, ACK/NACK; SYNCED/STALE/...
* ``protocol``   what a DiscoveryRequest means (new subscription, ACK, NACK, stale) for SotW and Delta
* ``affected``   which proxies a merged change touches (the simple, documented rule)
* ``generators`` generator per type URL, calling ``pilot.networking.generate``
* ``cache``      XdsCache: serialized resources per push context and proxy shape, shared across proxies
* ``connection`` one ADS stream: its proxy, watches, and building the responses
* ``server``     the grpc.aio ``AggregatedDiscoveryService``, the push pipeline, metrics
* ``debug``      JSON views for ``/debug/syncz`` and ``/debug/config_dump``
"""
