"""Checking a workload's certificate signing request (pure).

A CSR is accepted only when it parses, its self-signature is valid, its key type is supported, and it
names exactly one SPIFFE ID (one URI SAN, nothing else) that equals the caller's authenticated identity.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509

from citadel.ca import keys, spiffe
from citadel.ca.errors import INVALID_ARGUMENT, PERMISSION_DENIED, CaError


@dataclass(frozen=True)
class CheckedCsr:
    public_key: object
    identity: spiffe.Identity
    key_description: str


def parse(csr_pem: str | bytes) -> x509.CertificateSigningRequest:
    data = csr_pem.encode() if isinstance(csr_pem, str) else csr_pem
    if not data.strip():
        raise CaError(INVALID_ARGUMENT, "malformed_csr", "the request carries no CSR")
    try:
        return x509.load_pem_x509_csr(data)
    except ValueError as e:
        raise CaError(
            INVALID_ARGUMENT, "malformed_csr", f"the CSR is not a PEM PKCS#10 request: {e}"
        ) from None


def requested_identity(csr: x509.CertificateSigningRequest) -> spiffe.Identity:
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise CaError(INVALID_ARGUMENT, "malformed_csr", "the CSR has no SubjectAlternativeName") from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    others = [name for name in san if not isinstance(name, x509.UniformResourceIdentifier)]
    if len(uris) != 1 or others:
        raise CaError(
            INVALID_ARGUMENT,
            "malformed_csr",
            f"the CSR must name exactly one SPIFFE ID as its only SAN; it has {len(uris)} URI SAN(s)"
            f" and {len(others)} other SAN(s)",
        )
    try:
        return spiffe.parse(uris[0])
    except ValueError as e:
        raise CaError(INVALID_ARGUMENT, "malformed_csr", f"the CSR's URI SAN: {e}") from None


def check(csr_pem: str | bytes, caller: spiffe.Identity) -> CheckedCsr:
    """Validate `csr_pem` for `caller`; raise CaError with a reason the server counts."""
    csr = parse(csr_pem)
    if not csr.is_signature_valid:
        raise CaError(
            INVALID_ARGUMENT, "bad_csr_signature", "the CSR's signature does not match its public key"
        )
    try:
        public_key = csr.public_key()
    except ValueError as e:  # e.g. an unsupported key algorithm cryptography cannot load
        raise CaError(INVALID_ARGUMENT, "unsupported_key", f"unsupported key in the CSR: {e}") from None
    description = keys.check_public_key(public_key)
    wanted = requested_identity(csr)
    if wanted != caller:
        raise CaError(
            PERMISSION_DENIED,
            "identity_mismatch",
            f"the CSR asks for {wanted.uri} but the caller is authenticated as {caller.uri}",
        )
    return CheckedCsr(public_key, wanted, description)
