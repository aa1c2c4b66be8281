"""SotW responses on the wire without copying the cache's resources per proxy (pure codec).

A ``DiscoveryResponse`` built as a protobuf message copies every ``Any`` of the answer into the
response, once per proxy, and gRPC then serializes it again: with 1000 services and 2000 proxies that
was ~0.5 MB of copies per proxy and type held in the outboxes, and CPU that starved the event loop.
Here the repeated ``resources`` field (field 2) of an answer is encoded once per cached entry
(``XdsCache.body``) and every ``PreparedResponse`` only adds its own small header (version, type URL,
nonce) in front of those shared bytes when gRPC writes it. Protobuf parsers accept fields in any order,
so the bytes decode to the same message as the one built field by field.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

# DiscoveryResponse field numbers, wire type 2 (length-delimited)
_VERSION_INFO, _RESOURCES, _TYPE_URL, _NONCE = 1, 2, 4, 5


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def length_delimited(field: int, data: bytes) -> bytes:
    return varint(field << 3 | 2) + varint(len(data)) + data


def encode_resources(resources: Iterable[any_pb2.Any]) -> bytes:
    """The ``resources`` field of a DiscoveryResponse holding these ``Any`` messages, in order."""
    return b"".join(length_delimited(_RESOURCES, r.SerializeToString(deterministic=True)) for r in resources)


@dataclass(frozen=True, slots=True)
class PreparedResponse:
    """A SotW DiscoveryResponse whose resources are already encoded (``body``, shared with the cache)."""

    version_info: str
    type_url: str
    nonce: str
    body: bytes

    def SerializeToString(self) -> bytes:  # noqa: N802 (the protobuf name, so gRPC and tests can use it)
        head = b""
        for number, text in (
            (_VERSION_INFO, self.version_info),
            (_TYPE_URL, self.type_url),
            (_NONCE, self.nonce),
        ):
            if text:
                head += length_delimited(number, text.encode())
        return head + self.body

    def message(self) -> discovery_pb2.DiscoveryResponse:
        """The same response as a protobuf message (debugging and tests; it copies everything)."""
        return discovery_pb2.DiscoveryResponse.FromString(self.SerializeToString())

    @property
    def resources(self):
        return self.message().resources


def serialize_response(response) -> bytes:
    """gRPC's response serializer for the ADS service: prepared responses and plain messages."""
    return response.SerializeToString()


def response_size(response) -> int:
    """About the bytes gRPC will hold for the response once serialized."""
    if isinstance(response, PreparedResponse):
        return len(response.body) + len(response.version_info) + len(response.type_url) + 64
    return response.ByteSize()
