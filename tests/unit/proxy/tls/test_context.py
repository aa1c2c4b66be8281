"""Building TLS contexts from Envoy protos: what Istio sends is accepted, the rest is rejected by path."""

from __future__ import annotations

import ssl

import pytest
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2
from google.protobuf import json_format

from proxy.config.errors import ConfigError
from proxy.tls.context import (
    NotReady,
    PeerSans,
    build_context,
    check_secret,
    compile_downstream,
    compile_upstream,
)
from tests.unit.proxy.tls.certs import make_ca

SDS = {
    "api_config_source": {
        "api_type": "GRPC",
        "transport_api_version": "V3",
        "grpc_services": [{"envoy_grpc": {"cluster_name": "sds-grpc"}}],
        "set_node_on_first_message_only": True,
    },
    "initial_fetch_timeout": "0s",
    "resource_api_version": "V3",
}
ALICE = "spiffe://cluster.local/ns/default/sa/alice"


def downstream(d: dict) -> tls_pb2.DownstreamTlsContext:
    return json_format.ParseDict(d, tls_pb2.DownstreamTlsContext())


def upstream(d: dict) -> tls_pb2.UpstreamTlsContext:
    return json_format.ParseDict(d, tls_pb2.UpstreamTlsContext())


def istio_inbound() -> tls_pb2.DownstreamTlsContext:
    return downstream(
        {
            "common_tls_context": {
                "tls_params": {
                    "tls_minimum_protocol_version": "TLSv1_2",
                    "cipher_suites": ["ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-ECDSA-AES128-GCM-SHA256"],
                },
                "alpn_protocols": ["h2", "http/1.1"],
                "tls_certificate_sds_secret_configs": [{"name": "default", "sds_config": SDS}],
                "combined_validation_context": {
                    "default_validation_context": {
                        "match_typed_subject_alt_names": [
                            {"san_type": "URI", "matcher": {"prefix": "spiffe://cluster.local/"}}
                        ]
                    },
                    "validation_context_sds_secret_config": {"name": "ROOTCA", "sds_config": SDS},
                },
            },
            "require_client_certificate": True,
        }
    )


def secrets_for(ca, uri=ALICE) -> dict[str, secret_pb2.Secret]:
    chain, key = ca.issue(uri)
    return {
        "default": json_format.ParseDict(
            {"name": "default", "tls_certificate": {"certificate_chain": {"inline_bytes": _b64(chain)},
                                                    "private_key": {"inline_bytes": _b64(key)}}},
            secret_pb2.Secret(),
        ),
        "ROOTCA": json_format.ParseDict(
            {"name": "ROOTCA", "validation_context": {"trusted_ca": {"inline_bytes": _b64(ca.pem)}}},
            secret_pb2.Secret(),
        ),
    }  # fmt: skip


def _b64(b: bytes) -> str:
    import base64

    return base64.b64encode(b).decode()


def test_istio_inbound_context_waits_for_sds_then_requires_client_certs():
    config = compile_downstream(istio_inbound(), "tls")
    assert config.sds_names == ("default", "ROOTCA")
    assert config.require_client_certificate and config.alpn == ("h2", "http/1.1")
    with pytest.raises(NotReady, match="default"):
        build_context(config, {})
    built = build_context(config, secrets_for(make_ca()))
    assert built.ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert built.ssl_context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert built.local_uri_sans == (ALICE,)
    assert built.san_matchers.verify(PeerSans(uri=("spiffe://cluster.local/ns/x/sa/y",)))
    assert not built.san_matchers.verify(PeerSans(uri=("spiffe://other.domain/ns/x/sa/y",)))


def test_static_files_and_inline(tmp_path):
    ca = make_ca()
    chain, key = ca.issue(ALICE)
    (tmp_path / "cert.pem").write_bytes(chain)
    (tmp_path / "key.pem").write_bytes(key)
    (tmp_path / "root.pem").write_bytes(ca.pem)
    config = compile_downstream(
        downstream(
            {
                "common_tls_context": {
                    "tls_certificates": [
                        {"certificate_chain": {"filename": str(tmp_path / "cert.pem")},
                         "private_key": {"filename": str(tmp_path / "key.pem")}}
                    ],
                    "validation_context": {"trusted_ca": {"inline_string": ca.pem.decode()}},
                }
            }
        ),
        "tls",
    )  # fmt: skip
    built = build_context(config)
    assert built.ssl_context.verify_mode == ssl.CERT_OPTIONAL  # validation context, client cert optional
    assert built.local_uri_sans == (ALICE,)


def test_upstream_istio_mutual():
    config = compile_upstream(
        upstream(
            {
                "common_tls_context": {
                    "alpn_protocols": ["istio-peer-exchange", "istio"],
                    "tls_certificate_sds_secret_configs": [{"name": "default", "sds_config": SDS}],
                    "combined_validation_context": {
                        "default_validation_context": {"match_subject_alt_names": [{"exact": ALICE}]},
                        "validation_context_sds_secret_config": {"name": "ROOTCA", "sds_config": SDS},
                    },
                },
                "sni": "outbound_.9080_._.reviews.default.svc.cluster.local",
            }
        ),
        "cluster.transport_socket",
    )
    built = build_context(config, secrets_for(make_ca()))
    assert built.ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert not built.ssl_context.check_hostname
    assert config.sni == "outbound_.9080_._.reviews.default.svc.cluster.local"
    assert built.san_matchers.verify(PeerSans(uri=(ALICE,)))
    assert built.san_matchers.verify(PeerSans(dns=(ALICE,)))  # untyped matchers look at every SAN
    assert not built.san_matchers.verify(PeerSans(uri=(ALICE + "x",)))


def test_upstream_without_validation_does_not_verify():
    built = build_context(compile_upstream(upstream({}), "t"))
    assert built.ssl_context.verify_mode == ssl.CERT_NONE


@pytest.mark.parametrize(
    "matcher,ok,bad",
    [
        ({"exact": ALICE}, ALICE, ALICE + "2"),
        ({"prefix": "spiffe://cluster.local/ns/default/"}, ALICE, "spiffe://cluster.local/ns/prod/sa/a"),
        ({"safe_regex": {"regex": r"spiffe://cluster\.local/ns/[a-z]+/sa/alice"}}, ALICE, ALICE + "x"),
        ({"suffix": "/sa/alice"}, ALICE, "spiffe://cluster.local/ns/default/sa/bob"),
    ],
)
def test_typed_uri_san_matchers(matcher, ok, bad):
    ca = make_ca()
    chain, key = ca.issue(ALICE)
    config = compile_upstream(
        upstream({"common_tls_context": {"validation_context": {
            "trusted_ca": {"inline_bytes": _b64(ca.pem)},
            "match_typed_subject_alt_names": [{"san_type": "URI", "matcher": matcher}]}}}),
        "t",
    )  # fmt: skip
    assert config.san_matchers.verify(PeerSans(uri=(ok,)))
    assert not config.san_matchers.verify(PeerSans(uri=(bad,)))
    assert not config.san_matchers.verify(PeerSans(dns=(ok,)))  # typed: URI only
    assert not config.san_matchers.verify(PeerSans())


@pytest.mark.parametrize(
    "ctx,path,message",
    [
        ({"require_sni": True}, "tls.require_sni", "not supported"),
        ({"common_tls_context": {"tls_params": {"tls_minimum_protocol_version": "TLSv1_1"}}},
         "tls.common_tls_context.tls_params.tls_minimum_protocol_version", "TLSv1_2 or newer"),
        ({"common_tls_context": {"tls_params": {"tls_minimum_protocol_version": "TLSv1_3",
                                                "tls_maximum_protocol_version": "TLSv1_2"}}},
         "tls.common_tls_context.tls_params.tls_maximum_protocol_version", "below minimum"),
        ({"common_tls_context": {"tls_params": {"cipher_suites": ["NOPE-CIPHER"]}}},
         "tls.common_tls_context.tls_params.cipher_suites[0]", "unknown cipher"),
        ({"common_tls_context": {"tls_params": {"ecdh_curves": ["X25519"]}}},
         "tls.common_tls_context.tls_params.ecdh_curves", "not supported"),
        ({"common_tls_context": {"key_log": {"path": "/tmp/k"}}}, "tls.common_tls_context.key_log", "not supported"),
        ({"common_tls_context": {"validation_context": {"verify_certificate_spki": ["x"]}}},
         "tls.common_tls_context.validation_context.verify_certificate_spki", "not supported"),
        ({"common_tls_context": {"validation_context": {
            "match_typed_subject_alt_names": [{"san_type": "OTHER_NAME", "matcher": {"exact": "x"}}]}}},
         "tls.common_tls_context.validation_context.match_typed_subject_alt_names[0].san_type", "OTHER_NAME"),
        ({"common_tls_context": {"tls_certificates": [{"certificate_chain": {"filename": "/nonexistent/c.pem"},
                                                       "private_key": {"inline_string": "k"}}]}},
         "tls.common_tls_context.tls_certificates[0].certificate_chain.filename", "cannot read"),
        ({"common_tls_context": {}}, "tls.common_tls_context", "needs a certificate"),
        ({"require_client_certificate": True,
          "common_tls_context": {"tls_certificate_sds_secret_configs": [{"name": "default"}]}},
         "tls.require_client_certificate", "validation context"),
        ({"common_tls_context": {"tls_certificate_sds_secret_configs": [{"sds_config": SDS}]}},
         "tls.common_tls_context.tls_certificate_sds_secret_configs[0].name", "needs a name"),
        ({"common_tls_context": {"alpn_protocols": [""],
                                 "tls_certificate_sds_secret_configs": [{"name": "default"}]}},
         "tls.common_tls_context.alpn_protocols[0]", "1 to 255"),
    ],
)  # fmt: skip
def test_downstream_rejections_name_the_field(ctx, path, message):
    with pytest.raises(ConfigError) as e:
        compile_downstream(downstream(ctx), "tls")
    assert e.value.path == path
    assert message in e.value.message


def test_upstream_rejects_unsupported_fields():
    with pytest.raises(ConfigError) as e:
        compile_upstream(upstream({"auto_host_sni": True}), "c")
    assert e.value.path == "c.auto_host_sni"


def test_bad_secrets_are_rejected_and_wrong_kind_is_an_error():
    with pytest.raises(ConfigError, match="neither"):
        check_secret(secret_pb2.Secret(name="x"), "s")
    with pytest.raises(ConfigError) as e:
        check_secret(json_format.ParseDict({"name": "x", "generic_secret": {}}, secret_pb2.Secret()), "s")
    assert e.value.path == "s.generic_secret"
    config = compile_downstream(istio_inbound(), "tls")
    secrets = secrets_for(make_ca())
    secrets["default"], secrets["ROOTCA"] = secrets["ROOTCA"], secrets["default"]
    with pytest.raises(ConfigError, match="expected a tls_certificate"):
        build_context(config, secrets)


def test_key_not_matching_certificate_is_a_config_error():
    ca = make_ca()
    secrets = secrets_for(ca)
    _, other_key = ca.issue(ALICE)
    secrets["default"].tls_certificate.private_key.inline_bytes = other_key
    with pytest.raises(ConfigError, match="do not load"):
        build_context(compile_downstream(istio_inbound(), "tls"), secrets)
