"""SotW responses whose resources are the cache's shared bytes decode to the same DiscoveryResponse."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.service.discovery.v3 import discovery_pb2

from pilot.xds.cache import serialize
from pilot.xds.wire import PreparedResponse, encode_resources, serialize_response, varint

CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"


def clusters(count: int, name_len: int) -> tuple:
    return serialize(cluster_pb2.Cluster(name=f"c{i}-" + "x" * name_len) for i in range(count))


def test_varint_matches_protobuf_for_one_to_three_bytes():
    for value in (0, 1, 127, 128, 300, 16383, 16384, 70000):
        encoded = discovery_pb2.DiscoveryResponse(version_info="v" * value).SerializeToString()
        if value:
            assert encoded[1 : 1 + len(varint(value))] == varint(value)
    assert varint(0) == b"\x00" and varint(300) == b"\xac\x02"


def test_prepared_response_decodes_like_a_message_built_field_by_field():
    for count, name_len in ((0, 1), (1, 10), (3, 200), (50, 20000)):  # lengths under and over 128/16384
        built = clusters(count, name_len)
        prepared = PreparedResponse("2026/7", CDS, "a1-ff", encode_resources(b.resource for b in built))
        expected = discovery_pb2.DiscoveryResponse(version_info="2026/7", type_url=CDS, nonce="a1-ff")
        expected.resources.extend(b.resource for b in built)
        decoded = discovery_pb2.DiscoveryResponse.FromString(serialize_response(prepared))
        assert decoded == expected
        assert [r.value for r in prepared.resources] == [b.resource.value for b in built]


def test_empty_fields_are_left_out_and_plain_messages_still_serialize():
    prepared = PreparedResponse("", CDS, "", b"")
    assert discovery_pb2.DiscoveryResponse.FromString(prepared.SerializeToString()) == (
        discovery_pb2.DiscoveryResponse(type_url=CDS)
    )
    delta = discovery_pb2.DeltaDiscoveryResponse(type_url=CDS, nonce="n")
    assert serialize_response(delta) == delta.SerializeToString()
