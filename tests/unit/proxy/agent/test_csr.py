"""The agent's CSR: a fresh key each time, exactly one SPIFFE URI SAN, valid signature; accepted by citadel."""

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from citadel.ca import csr as ca_csr
from citadel.ca import spiffe
from proxy.agent import csr

URI = "spiffe://cluster.local/ns/default/sa/bookinfo"


@pytest.mark.parametrize("key_type", ["ec-p256", "rsa-2048"])
def test_csr_contents(key_type):
    key_pem, csr_pem = csr.build(URI, key_type)
    request = x509.load_pem_x509_csr(csr_pem.encode())
    assert request.is_signature_valid
    san = request.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical and list(san.value) == [x509.UniformResourceIdentifier(URI)]
    assert list(request.subject) == []
    key = serialization.load_pem_private_key(key_pem, None)
    assert key.public_key().public_numbers() == request.public_key().public_numbers()
    # the CA core accepts it for exactly this identity
    assert ca_csr.check(csr_pem, spiffe.parse(URI)).identity.uri == URI


def test_every_csr_has_a_new_key():
    assert csr.build(URI)[0] != csr.build(URI)[0]


def test_spiffe_id():
    assert csr.spiffe_id("cluster.local", "default", "bookinfo") == URI
