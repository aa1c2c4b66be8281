"""Small builders for citadel unit tests: CSRs with chosen keys and SANs, a fresh self-signed CA."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from citadel.ca import certs, keys
from citadel.ca.authority import CertificateAuthority

TD = "cluster.local"


def make_ca(key_type="ec-p256", max_ttl=7 * 86400.0, clock=None) -> CertificateAuthority:
    key = keys.generate(key_type)
    root = certs.self_signed_root(key, TD, dt.datetime.now(dt.UTC).replace(microsecond=0))
    kwargs = {"clock": clock} if clock else {}
    return CertificateAuthority(root, key, [root], TD, max_ttl, **kwargs)


def make_csr(
    uri_sans=("spiffe://cluster.local/ns/default/sa/bookinfo",), key=None, dns=()
) -> tuple[str, object]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    names = [x509.UniformResourceIdentifier(u) for u in uri_sans] + [x509.DNSName(d) for d in dns]
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=True)
    csr = builder.sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode(), key


def rsa_key(bits):
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)
