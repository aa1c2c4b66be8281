"""Building X.509 certificates: the self-signed root, X.509-SVID leaves, citadel's server certificate.

Pure: keys and times come in, certificates come out.
"""

from __future__ import annotations

import datetime as dt
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from citadel.ca import keys

ROOT_LIFETIME = dt.timedelta(days=3650)
# Backdate CA certificates a little so a peer whose clock is slightly behind still accepts them.
CA_BACKDATE = dt.timedelta(minutes=5)


def _key_usage(*, digital_signature=False, key_encipherment=False, cert_sign=False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def self_signed_root(private_key, organization: str, now: dt.datetime) -> x509.Certificate:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, "Isthmus citadel root CA"),
        ]
    )
    public = private_key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CA_BACKDATE)
        .not_valid_after(now + ROOT_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=True, digital_signature=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(private_key, keys.signature_hash(private_key))
    )


def _leaf_builder(public_key, issuer_cert, not_before, not_after, subject=None) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject or x509.Name([]))
        .issuer_name(issuer_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True, key_encipherment=True), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_cert.public_key()), critical=False
        )
    )


def workload_svid(public_key, spiffe_uri: str, issuer_cert, issuer_key, not_before, not_after):
    """An X.509-SVID: empty subject, exactly one URI SAN (critical, as the SPIFFE spec asks for an
    empty subject), not a CA, digitalSignature+keyEncipherment, EKU serverAuth+clientAuth."""
    builder = _leaf_builder(public_key, issuer_cert, not_before, not_after).add_extension(
        x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_uri)]), critical=True
    )
    return builder.sign(issuer_key, keys.signature_hash(issuer_key))


def server_cert(public_key, dns_names, ip_addresses, issuer_cert, issuer_key, not_before, not_after):
    """citadel's own serving certificate: DNS and IP SANs, issued from its signing certificate."""
    sans: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, (list(dns_names) or ["citadel"])[0])])
    builder = _leaf_builder(public_key, issuer_cert, not_before, not_after, subject).add_extension(
        x509.SubjectAlternativeName(sans), critical=False
    )
    return builder.sign(issuer_key, keys.signature_hash(issuer_key))


def to_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def load_pem_chain(data: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(data)


def uri_sans(cert: x509.Certificate) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return ext.value.get_values_for_type(x509.UniformResourceIdentifier)
