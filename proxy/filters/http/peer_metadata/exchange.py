"""Istio's metadata exchange over HTTP headers (pure: no I/O).

A sidecar tells its peer who it is in two headers:

* ``x-envoy-peer-metadata``: base64 of a serialized ``google.protobuf.Struct`` holding the workload's
  node metadata with Istio's keys (``WORKLOAD_NAME``, ``NAMESPACE``, ``LABELS``, ...);
* ``x-envoy-peer-metadata-id``: the proxy's node id.

The client's sidecar sends them on the request (the callee learns its caller), the server's sidecar
on the response (the caller learns its callee). What a proxy learns goes into the stream's
``filter_state`` under the keys below, where the access loggers read it
(``proxy.accesslog.grpc_entries``).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping

from google.protobuf import message, struct_pb2

PEER_METADATA_HEADER = "x-envoy-peer-metadata"
PEER_METADATA_ID_HEADER = "x-envoy-peer-metadata-id"

# StreamInfo.filter_state keys (Istio's names). The peer is a plain dict of its node metadata
# (str keys; ``LABELS`` a dict of str), shared between requests: read it, never change it.
DOWNSTREAM_PEER = "downstream_peer"
DOWNSTREAM_PEER_ID = "downstream_peer_id"
UPSTREAM_PEER = "upstream_peer"
UPSTREAM_PEER_ID = "upstream_peer_id"

# Node metadata keys a sidecar shares with its peers (Istio's workload metadata object); the rest of
# the node metadata (proxy config, interception mode, ...) stays private.
SHARED_KEYS = (
    "NAME",
    "NAMESPACE",
    "CLUSTER_ID",
    "SERVICE_ACCOUNT",
    "WORKLOAD_NAME",
    "OWNER",
    "MESH_ID",
    "PLATFORM_METADATA",
    "APP_CONTAINERS",
    "INSTANCE_IPS",
)
# Labels that identify the workload's app and version (Istio's canonical names and the common ones).
SHARED_LABELS = (
    "app",
    "version",
    "app.kubernetes.io/name",
    "app.kubernetes.io/version",
    "service.istio.io/canonical-name",
    "service.istio.io/canonical-revision",
)


def shared_metadata(node_metadata: Mapping, additional_labels: Iterable[str] = ()) -> dict:
    """The part of our node metadata we send to peers: Istio's identity keys and the app/version
    labels (plus ``additional_labels``)."""
    out = {k: node_metadata[k] for k in SHARED_KEYS if node_metadata.get(k) not in (None, "", [], {})}
    labels = node_metadata.get("LABELS")
    if isinstance(labels, Mapping):
        wanted = (*SHARED_LABELS, *additional_labels)
        kept = {k: str(labels[k]) for k in wanted if labels.get(k) not in (None, "")}
        if kept:
            out["LABELS"] = kept
    return out


def encode(metadata: Mapping) -> str:
    """The ``x-envoy-peer-metadata`` value: base64 of the Struct, serialized deterministically."""
    s = struct_pb2.Struct()
    s.update(dict(metadata))
    return base64.b64encode(s.SerializeToString(deterministic=True)).decode("ascii")


def _plain(v):
    if isinstance(v, struct_pb2.Struct):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, struct_pb2.ListValue):
        return [_plain(x) for x in v]
    return v


def decode(value: str) -> dict | None:
    """A header value -> the peer's metadata as plain Python; None when it is not a Struct."""
    try:
        raw = base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
        s = struct_pb2.Struct()
        s.ParseFromString(raw)
    except (binascii.Error, ValueError, message.DecodeError):
        return None
    return {k: _plain(v) for k, v in s.items()}


class PeerCache:
    """Decoded peers memoised by header value (a peer sends the same bytes every time), bounded: past
    ``max_entries`` the oldest quarter is forgotten, as Istio's filter does."""

    def __init__(self, max_entries: int = 1024) -> None:
        self.max_entries = max_entries
        self._peers: dict[str, dict | None] = {}

    def lookup(self, value: str) -> dict | None:
        peers = self._peers
        if value in peers:
            return peers[value]
        peer = decode(value)
        if len(peers) >= self.max_entries:
            for key in list(peers)[: max(1, self.max_entries // 4)]:
                del peers[key]
        peers[value] = peer
        return peer

    def __len__(self) -> int:
        return len(self._peers)
