from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

from proxy.agent import secrets

STATE = secrets.CertState(
    3, b"KEY", ("LEAF\n", "INT\n", "ROOT\n"), b"ROOT\n", 0.0, 6.0, "spiffe://x/ns/a/sa/b"
)


def test_default_carries_leaf_and_intermediates_and_key():
    s = secrets.secret("default", STATE)
    assert s.tls_certificate.certificate_chain.inline_bytes == b"LEAF\nINT\n"
    assert s.tls_certificate.private_key.inline_bytes == b"KEY"


def test_rootca_is_the_trust_bundle():
    packed = secrets.packed("ROOTCA", STATE)
    assert packed.type_url == secrets.SECRET_TYPE_URL
    s = secret_pb2.Secret()
    packed.Unpack(s)
    assert s.name == "ROOTCA" and s.validation_context.trusted_ca.inline_bytes == b"ROOT\n"
