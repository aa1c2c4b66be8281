"""What the main process and a worker say to each other over their Unix socket pair. Pure.

A frame is a 4-byte big-endian length, one kind byte, then the payload:

* ``B`` main -> worker, first frame: the validated ``Bootstrap`` (protobuf bytes).
* ``X`` main -> worker: a config change as an Envoy ``DeltaDiscoveryResponse`` (type URL, the
  changed resources as ``Resource`` with their Any and version, ``removed_resources``, a nonce).
  Listeners, clusters, routes, endpoints and SDS secrets all travel this way: there is no second
  config format. The worker applies it with the same handlers a single process uses.
* ``A`` worker -> main: the worker's answer to an ``X`` frame, a ``DeltaDiscoveryRequest`` with
  ``response_nonce`` and, when it failed, ``error_detail``.
* ``J`` either way: small JSON control messages (``init``, ``ready``, ``stats`` request/reply,
  ``drain``, ``shutdown``, ``healthcheck``, ``fetch_timeout``, ``synced``).
"""

from __future__ import annotations

import json
import struct

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2
from google.rpc import status_pb2

from proxy.xds import api
from proxy.xds.resources import decode_any

HEADER = struct.Struct(">IB")
MAX_FRAME = 1 << 30

BOOTSTRAP = ord("B")
XDS = ord("X")
ACK = ord("A")
JSON = ord("J")
KINDS = {BOOTSTRAP, XDS, ACK, JSON}


class ProtocolError(Exception):
    pass


def frame(kind: int, payload: bytes) -> bytes:
    return HEADER.pack(len(payload) + 1, kind) + payload


def json_frame(msg: dict) -> bytes:
    return frame(JSON, json.dumps(msg, separators=(",", ":")).encode())


class FrameReader:
    """Sans-IO: ``feed(bytes) -> [(kind, payload)]``; raises ProtocolError on a malformed stream."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buf += data
        out = []
        while len(self._buf) >= HEADER.size:
            length, kind = HEADER.unpack_from(self._buf)
            if length < 1 or length > MAX_FRAME or kind not in KINDS:
                raise ProtocolError(f"bad frame header (length {length}, kind {kind})")
            end = 4 + length
            if len(self._buf) < end:
                break
            out.append((kind, bytes(self._buf[5:end])))
            del self._buf[:end]
        return out


# ---- config changes ---------------------------------------------------------------------------------


def encode_change(
    type_url: str,
    version_info: str,
    resources: dict[str, tuple[object, str]],
    removed: set[str] | list[str],
    nonce: str,
) -> bytes:
    """`resources`: name -> (message, version). Returns an ``X`` frame."""
    resp = discovery_pb2.DeltaDiscoveryResponse(
        type_url=type_url, system_version_info=version_info, nonce=nonce
    )
    for name, (msg, version) in resources.items():
        r = resp.resources.add(name=name, version=version)
        packed = any_pb2.Any()
        packed.Pack(msg)
        r.resource.CopyFrom(packed)
    resp.removed_resources.extend(sorted(removed))
    return frame(XDS, resp.SerializeToString())


def decode_change(payload: bytes) -> tuple[str, api.ResourceUpdate]:
    """An ``X`` payload as (nonce, ResourceUpdate) with ``delta=True``."""
    resp = discovery_pb2.DeltaDiscoveryResponse()
    resp.ParseFromString(payload)
    resources = {}
    versions = {}
    for r in resp.resources:
        resources[r.name] = decode_any(resp.type_url, r.resource, r.name)
        versions[r.name] = r.version
    update = api.ResourceUpdate(
        type_url=resp.type_url,
        version_info=resp.system_version_info,
        resources=resources,
        removed=set(resp.removed_resources),
        delta=True,
        versions=versions,
    )
    return resp.nonce, update


def encode_ack(nonce: str, type_url: str, error: str | None = None) -> bytes:
    req = discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, response_nonce=nonce)
    if error is not None:
        req.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
    return frame(ACK, req.SerializeToString())


def decode_ack(payload: bytes) -> tuple[str, str | None]:
    """(nonce, error message or None)."""
    req = discovery_pb2.DeltaDiscoveryRequest()
    req.ParseFromString(payload)
    return req.response_nonce, (req.error_detail.message if req.HasField("error_detail") else None)


# ---- the main process's current config, for a worker that (re)starts ------------------------------


class Snapshot:
    """Every resource currently in force, per type URL: name -> (message, version). Updated with each
    accepted change; ``changes()`` replays it to a new worker in Envoy's order (secrets first, then
    CDS, EDS, LDS, RDS), CDS and LDS always present so that the worker's init completes."""

    ORDER = (api.SECRET, api.CLUSTER, api.ENDPOINT, api.LISTENER, api.ROUTE)
    WILDCARD = (api.CLUSTER, api.LISTENER)

    def __init__(self) -> None:
        self.resources: dict[str, dict[str, tuple[object, str]]] = {t: {} for t in self.ORDER}
        self.versions: dict[str, str] = {}

    def apply(self, update: api.ResourceUpdate) -> tuple[dict[str, tuple[object, str]], set[str]]:
        """Record an accepted update; returns what changed as (resources, removed) for the workers."""
        state = self.resources.setdefault(update.type_url, {})
        changed = {
            name: (
                msg,
                update.versions.get(name, update.version_info) if update.delta else update.version_info,
            )
            for name, msg in update.resources.items()
        }
        if update.delta or update.type_url not in self.WILDCARD:
            removed = set(update.removed)
        else:
            removed = set(state) - set(update.resources)
        for name in removed:
            state.pop(name, None)
        state.update(changed)
        self.versions[update.type_url] = update.version_info
        return changed, removed

    def set_secret(self, secret, version: str) -> None:
        self.resources[api.SECRET][secret.name] = (secret, version)

    def changes(self) -> list[tuple[str, str, dict[str, tuple[object, str]]]]:
        """[(type_url, version_info, resources)] to bring a fresh worker to this state."""
        out = []
        for type_url in self.ORDER:
            state = self.resources.get(type_url, {})
            if state or type_url in self.WILDCARD:
                out.append((type_url, self.versions.get(type_url, ""), dict(state)))
        return out
