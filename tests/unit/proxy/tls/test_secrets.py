"""SecretManager, the SDS protocol (ACK/NACK) and TLS socket factories: rotation builds a new context."""

from __future__ import annotations

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2, json_format

from proxy.config.context import FactoryContext
from proxy.config.errors import ConfigError
from proxy.stats.store import Store
from proxy.tls.context import compile_downstream
from proxy.tls.sds_client import SECRET_TYPE_URL, SdsProtocol
from proxy.tls.secrets import SecretManager, cluster_grpc_target
from proxy.tls.transport_socket import TlsSocketFactory, build_transport_socket
from tests.unit.proxy.tls.certs import make_ca
from tests.unit.proxy.tls.test_context import ALICE, SDS, istio_inbound, secrets_for

SDS_CLUSTER = {
    "name": "sds-grpc",
    "type": "STATIC",
    "load_assignment": {"cluster_name": "sds-grpc", "endpoints": [{"lb_endpoints": [
        {"endpoint": {"address": {"pipe": {"path": "/tmp/agent/SDS"}}}}]}]},
}  # fmt: skip


class FakeClient:
    def __init__(self, target, names, on_update, node=None):
        self.target, self.names, self.on_update, self.started = target, names, on_update, False

    def start(self):
        self.started = True

    async def stop(self):
        pass


def manager(static=()) -> SecretManager:
    cluster = json_format.ParseDict(SDS_CLUSTER, cluster_pb2.Cluster())
    return SecretManager(static, [cluster], client_factory=FakeClient)


def response(*secrets, version="1", nonce="n1") -> discovery_pb2.DiscoveryResponse:
    resources = []
    for s in secrets:
        a = any_pb2.Any()
        a.Pack(s)
        resources.append(a)
    return discovery_pb2.DiscoveryResponse(version_info=version, nonce=nonce, type_url=SECRET_TYPE_URL,
                                           resources=resources)  # fmt: skip


def test_pipe_cluster_target_and_errors():
    cluster = json_format.ParseDict(SDS_CLUSTER, cluster_pb2.Cluster())
    assert cluster_grpc_target([cluster], "sds-grpc", "p") == "unix:/tmp/agent/SDS"
    with pytest.raises(ConfigError, match="not defined"):
        cluster_grpc_target([cluster], "nope", "p")


def test_rotation_builds_new_context_and_keeps_old_one_for_existing_connections():
    m = manager()
    factory = TlsSocketFactory(compile_downstream(istio_inbound(), "tls"), m, "tls")
    client = m.clients[("unix:/tmp/agent/SDS", "default")]
    assert ("unix:/tmp/agent/SDS", "ROOTCA") in m.clients
    assert not factory.ready
    ca = make_ca()
    first = secrets_for(ca)
    client.on_update([first["default"]])
    assert not factory.ready  # ROOTCA still missing
    m.clients[("unix:/tmp/agent/SDS", "ROOTCA")].on_update([first["ROOTCA"]])
    assert factory.ready
    old = factory.current
    client.on_update([secrets_for(ca)["default"]])
    assert factory.current is not old and factory.current.generation == old.generation + 1
    assert old.ssl_context is not factory.current.ssl_context  # the old one is untouched, still usable


def test_bad_secret_is_rejected_and_the_context_kept():
    m = manager()
    factory = TlsSocketFactory(compile_downstream(istio_inbound(), "tls"), m, "tls")
    ca = make_ca()
    good = secrets_for(ca)
    m.update("default", [good["default"]])
    m.update("ROOTCA", [good["ROOTCA"]])
    current = factory.current
    bad = secret_pb2.Secret()
    bad.CopyFrom(good["default"])
    _, other_key = ca.issue(ALICE)
    bad.tls_certificate.private_key.inline_bytes = other_key
    with pytest.raises(ConfigError):
        m.update("default", [bad])
    assert factory.current is current
    assert m.secrets["default"] is good["default"]


def test_sds_protocol_acks_and_nacks():
    proto = SdsProtocol(["default"], base_pb2.Node(id="sidecar~127.0.0.1~x~default.svc.cluster.local"))
    first = proto.initial_request()
    assert list(first.resource_names) == ["default"] and first.node.id.startswith("sidecar")
    secrets = secrets_for(make_ca())
    seen = []
    ack = proto.handle(response(secrets["default"], version="3", nonce="a"), seen.extend)
    assert (ack.version_info, ack.response_nonce, ack.HasField("error_detail")) == ("3", "a", False)
    assert seen[0].name == "default"

    def reject(_):
        raise ConfigError("x", "bad key")

    nack = proto.handle(response(secrets["default"], version="4", nonce="b"), reject)
    assert (nack.version_info, nack.response_nonce) == ("3", "b")
    assert "bad key" in nack.error_detail.message
    unrequested = proto.handle(response(secrets["ROOTCA"], version="5", nonce="c"), seen.extend)
    assert "not requested" in unrequested.error_detail.message
    assert proto.initial_request().version_info == "3"  # a reconnect resumes from the last accepted


def test_static_secret_by_name_and_missing_static_secret():
    secrets = secrets_for(make_ca())
    m = manager(static=[secrets["default"], secrets["ROOTCA"]])
    tls = json_format.ParseDict(
        {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "common_tls_context": {"tls_certificate_sds_secret_configs": [{"name": "default"}],
                                   "validation_context_sds_secret_config": {"name": "ROOTCA"}},
            "require_client_certificate": True}},
        base_pb2.TransportSocket(),
    )  # fmt: skip
    ctx = FactoryContext(stats=Store(), extra={"secret_manager": m})
    factory = build_transport_socket(tls, ctx, "fc.transport_socket", upstream=False)
    assert factory.ready
    with pytest.raises(ConfigError) as e:
        build_transport_socket(tls, ctx, "c.transport_socket", upstream=True)
    assert "needs UpstreamTlsContext" in e.value.message
    m2 = manager()
    with pytest.raises(ConfigError) as e:
        build_transport_socket(
            tls, FactoryContext(stats=Store(), extra={"secret_manager": m2}), "fc", upstream=False
        )
    assert "static secret 'default'" in e.value.message


def test_sds_source_rejections():
    m = manager()
    config = compile_downstream(istio_inbound(), "tls")
    bad = secret_pb2.SdsSecretConfig()
    bad.CopyFrom(config.certificate_sds[0])
    bad.sds_config.ClearField("api_config_source")
    bad.sds_config.ads.SetInParent()
    with pytest.raises(ConfigError, match="SDS from ads"):
        m.watch(bad, "p", None)
    delta = json_format.ParseDict({"name": "default", "sds_config": SDS}, secret_pb2.SdsSecretConfig())
    delta.sds_config.api_config_source.api_type = 3  # DELTA_GRPC
    with pytest.raises(ConfigError) as e:
        m.watch(delta, "p", None)
    assert e.value.path == "p.sds_config.api_config_source.api_type"


def test_raw_buffer_is_plaintext():
    ts = json_format.ParseDict(
        {"name": "envoy.transport_sockets.raw_buffer", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"}},
        base_pb2.TransportSocket(),
    )  # fmt: skip
    assert build_transport_socket(ts, FactoryContext(stats=Store()), "p", upstream=True) is None
