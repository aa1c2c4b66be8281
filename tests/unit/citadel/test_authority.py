"""The CA core: X.509-SVID fields exactly as required, TTLs, key types, CSR checks, peer certificates."""

import base64
import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from citadel.ca import spiffe
from citadel.ca.errors import CaError

from .helpers import make_ca, make_csr, rsa_key

ME = spiffe.make("cluster.local", "default", "bookinfo")


def leaf_of(chain):
    return x509.load_pem_x509_certificate(chain[0].encode())


def test_svid_has_exactly_the_required_fields():
    ca = make_ca()
    csr_pem, key = make_csr()
    chain = ca.sign(csr_pem, ME)
    leaf = leaf_of(chain)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == [x509.UniformResourceIdentifier("spiffe://cluster.local/ns/default/sa/bookinfo")]
    ku = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and ku.key_encipherment
    assert not (ku.key_cert_sign or ku.crl_sign or ku.content_commitment or ku.data_encipherment)
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert leaf.public_key().public_numbers() == key.public_key().public_numbers()
    leaf.verify_directly_issued_by(ca.root)
    assert chain[-1] == ca.root_pem and len(chain) == 2


def test_default_ttl_is_24h_and_a_requested_ttl_is_honoured():
    ca = make_ca()
    leaf = leaf_of(ca.sign(make_csr()[0], ME))
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == dt.timedelta(hours=24)
    leaf = leaf_of(ca.sign(make_csr()[0], ME, requested_ttl=600))
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == dt.timedelta(seconds=600)


def test_ttl_over_the_cap_is_refused_and_default_never_exceeds_it():
    ca = make_ca(max_ttl=3600)
    with pytest.raises(CaError) as e:
        ca.sign(make_csr()[0], ME, requested_ttl=3601)
    assert (e.value.kind, e.value.reason) == ("invalid_argument", "ttl_over_cap")
    assert "3601" in e.value.message and "3600" in e.value.message
    leaf = leaf_of(ca.sign(make_csr()[0], ME))
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == dt.timedelta(hours=1)


def test_csr_for_another_identity_is_permission_denied():
    ca = make_ca()
    csr_pem, _ = make_csr(["spiffe://cluster.local/ns/default/sa/other"])
    with pytest.raises(CaError) as e:
        ca.sign(csr_pem, ME)
    assert (e.value.kind, e.value.reason) == ("permission_denied", "identity_mismatch")
    assert "sa/other" in e.value.message and "sa/bookinfo" in e.value.message


def test_bad_csr_signature_is_refused():
    csr_pem, _ = make_csr(key=rsa_key(2048))
    der = bytearray(x509.load_pem_x509_csr(csr_pem.encode()).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # the last byte of an RSA CSR is inside its signature
    pem = "-----BEGIN CERTIFICATE REQUEST-----\n" + base64.encodebytes(bytes(der)).decode()
    pem += "-----END CERTIFICATE REQUEST-----\n"
    with pytest.raises(CaError) as e:
        make_ca().sign(pem, ME)
    assert (e.value.kind, e.value.reason) == ("invalid_argument", "bad_csr_signature")


@pytest.mark.parametrize(
    "key, ok",
    [
        (lambda: ec.generate_private_key(ec.SECP256R1()), True),
        (lambda: ec.generate_private_key(ec.SECP384R1()), True),
        (lambda: rsa_key(2048), True),
        (lambda: rsa_key(1024), False),
        (lambda: ec.generate_private_key(ec.SECP521R1()), False),
    ],
)
def test_key_types(key, ok):
    csr_pem, _ = make_csr(key=key())
    ca = make_ca()
    if ok:
        assert len(ca.sign(csr_pem, ME)) == 2
    else:
        with pytest.raises(CaError) as e:
            ca.sign(csr_pem, ME)
        assert (e.value.kind, e.value.reason) == ("invalid_argument", "unsupported_key")


def test_rsa_root_option_signs_ec_leaves():
    ca = make_ca(key_type="rsa-2048")
    leaf_of(ca.sign(make_csr()[0], ME)).verify_directly_issued_by(ca.root)


@pytest.mark.parametrize(
    "sans, dns",
    [((), ()), (("spiffe://cluster.local/ns/default/sa/bookinfo",), ("evil.example",)), (("https://x",), ())],
)
def test_csr_must_name_one_spiffe_id_only(sans, dns):
    with pytest.raises(CaError) as e:
        make_ca().sign(make_csr(sans, dns=dns)[0], ME)
    assert e.value.reason == "malformed_csr"


def test_garbage_csr_is_invalid_argument():
    with pytest.raises(CaError) as e:
        make_ca().sign("not a csr", ME)
    assert (e.value.kind, e.value.reason) == ("invalid_argument", "malformed_csr")


def test_peer_certificate_identity_and_expiry():
    now = [dt.datetime.now(dt.UTC)]
    ca = make_ca(clock=lambda: now[0])
    chain = ca.sign(make_csr()[0], ME, requested_ttl=60)
    assert ca.identity_of_peer("".join(chain)) == ME
    now[0] += dt.timedelta(seconds=120)
    with pytest.raises(CaError) as e:
        ca.identity_of_peer(chain[0])
    assert e.value.kind == "unauthenticated"
    stranger = make_ca()
    with pytest.raises(CaError) as e:
        stranger.identity_of_peer(chain[0])
    assert e.value.reason == "bad_client_cert"
