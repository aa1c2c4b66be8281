"""proxy.tls.der reads SANs and subjects exactly as cryptography does (cryptography is the oracle)."""

from __future__ import annotations

import datetime
import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from proxy.tls import der as d
from proxy.tls.context import sans_of

KEY = ec.generate_private_key(ec.SECP256R1())


def _cert(subject: x509.Name, sans: list | None, critical: bool = False) -> x509.Certificate:
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cluster.local")]))
        .public_key(KEY.public_key())
        .serial_number(12345678901234567890)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if sans is not None:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=critical)
    return b.sign(KEY, hashes.SHA256())


SANS = [
    x509.UniformResourceIdentifier("spiffe://cluster.local/ns/default/sa/reviews"),
    x509.DNSName("reviews.default.svc"),
    x509.DNSName("*.example.com"),
    x509.RFC822Name("ops@example.com"),
    x509.IPAddress(ipaddress.ip_address("127.0.0.7")),
    x509.IPAddress(ipaddress.ip_address("2001:db8::1")),
    x509.UniformResourceIdentifier("spiffe://cluster.local/ns/x/sa/y"),
    x509.RegisteredID(x509.ObjectIdentifier("1.2.3.4")),
    x509.DirectoryName(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dir")])),
]

SUBJECTS = [
    x509.Name([]),  # Istio's SVIDs
    x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "productpage")]),
    x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "CA"),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "San Francisco"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, 'Acme, "Inc" <x>; a+b\\c'),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "#leading hash"),
            x509.NameAttribute(NameOID.COMMON_NAME, " spaces both sides "),
            x509.NameAttribute(NameOID.EMAIL_ADDRESS, "a@b.c"),
            x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "example"),
            x509.NameAttribute(NameOID.USER_ID, "u1"),
            x509.NameAttribute(NameOID.STREET_ADDRESS, "1 Main St"),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, "42"),
            x509.NameAttribute(NameOID.COMMON_NAME, "ünïcødé ✓"),
        ]
    ),
    x509.Name(
        [
            x509.RelativeDistinguishedName(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, "multi"),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "valued"),
                ]
            ),
            x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COUNTRY_NAME, "DE")]),
        ]
    ),
]


@pytest.mark.parametrize("subject", SUBJECTS, ids=range(len(SUBJECTS)))
def test_subject_matches_cryptography(subject):
    cert = _cert(subject, SANS)
    assert d.subject_rfc4514(cert.public_bytes(Encoding.DER)) == cert.subject.rfc4514_string()


@pytest.mark.parametrize("critical", [False, True])
def test_sans_match_cryptography(critical):
    cert = _cert(x509.Name([]), SANS, critical)
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    sans = sans_of(cert.public_bytes(Encoding.DER))
    assert sans.uri == tuple(ext.get_values_for_type(x509.UniformResourceIdentifier))
    assert sans.dns == ("reviews.default.svc", "*.example.com")
    assert sans.email == ("ops@example.com",)
    assert sans.ip == ("127.0.0.7", "2001:db8::1")


def test_no_san_extension_gives_no_sans():
    sans = sans_of(_cert(x509.Name([]), None).public_bytes(Encoding.DER))
    assert sans.all == ()


def test_pem_chain_and_back():
    a, b = _cert(x509.Name([]), SANS), _cert(SUBJECTS[1], None)
    pem = a.public_bytes(Encoding.PEM) + b"\n" + b.public_bytes(Encoding.PEM)
    ders = d.pem_certificates_der(b"junk before\n" + pem)
    assert ders == [a.public_bytes(Encoding.DER), b.public_bytes(Encoding.DER)]
    assert d.der_to_pem(ders[0]) == a.public_bytes(Encoding.PEM).decode()


@pytest.mark.parametrize(
    "bad",
    [b"", b"\x30", b"\x30\x05\x30\x01", b"\x04\x00", b"\x30\x84\xff\xff\xff\xff", b"\x30\x80\x00\x00"],
)
def test_malformed_der_is_a_value_error(bad):
    with pytest.raises(ValueError):
        d.subject_alt_names(bad)
    with pytest.raises(ValueError):
        d.subject_rfc4514(bad)


def test_truncated_certificate_is_a_value_error():
    der = _cert(x509.Name([]), SANS).public_bytes(Encoding.DER)
    with pytest.raises(ValueError):
        d.subject_alt_names(der[: len(der) // 2])


def test_pem_without_certificate_is_a_value_error():
    with pytest.raises(ValueError, match="no PEM CERTIFICATE"):
        d.pem_certificates_der(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")


def test_oid_text():
    assert d.oid_text(bytes.fromhex("551d11")) == "2.5.29.17"
    assert d.oid_text(bytes.fromhex("2a864886f70d010901")) == "1.2.840.113549.1.9.1"
