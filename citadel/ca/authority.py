"""The signing core: turns a checked CSR into an X.509-SVID chain. Knows nothing about gRPC or files.

`chain` is what follows a leaf on the wire: the signing certificate, any intermediates, the root last
(a self-signed root signs directly, so then the chain is just the root).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from citadel.ca import certs, csr, keys, spiffe
from citadel.ca.errors import INVALID_ARGUMENT, UNAUTHENTICATED, CaError

DEFAULT_TTL = 24 * 3600.0


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class CertificateAuthority:
    def __init__(
        self,
        signing_cert: x509.Certificate,
        signing_key,
        chain: list[x509.Certificate],
        trust_domain: str,
        max_ttl: float,
        default_ttl: float = DEFAULT_TTL,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        if not chain:
            raise ValueError("the CA chain must end with a root certificate")
        self.signing_cert = signing_cert
        self.signing_key = signing_key
        self.chain = chain
        self.root = chain[-1]
        self.trust_domain = spiffe.check_trust_domain(trust_domain)
        self.max_ttl = float(max_ttl)
        self.default_ttl = min(float(default_ttl), self.max_ttl)
        self.clock = clock

    @property
    def root_pem(self) -> str:
        return certs.to_pem(self.root)

    def chain_pems(self) -> list[str]:
        return [certs.to_pem(c) for c in self.chain]

    def lifetime(self, requested_seconds: int | float) -> float:
        """The TTL to issue: the default when 0 is asked; an error above --max-ttl or below zero."""
        if requested_seconds < 0:
            raise CaError(
                INVALID_ARGUMENT, "invalid_ttl", f"validity_duration {requested_seconds}s is negative"
            )
        if requested_seconds == 0:
            return self.default_ttl
        if requested_seconds > self.max_ttl:
            raise CaError(
                INVALID_ARGUMENT,
                "ttl_over_cap",
                f"requested TTL {requested_seconds:g}s is over the maximum {self.max_ttl:g}s (--max-ttl)",
            )
        return float(requested_seconds)

    def identity(self, namespace: str, service_account: str) -> spiffe.Identity:
        return spiffe.make(self.trust_domain, namespace, service_account)

    def sign(
        self, csr_pem: str | bytes, caller: spiffe.Identity, requested_ttl: int | float = 0
    ) -> list[str]:
        """Check the CSR against the caller and sign it. Returns PEMs: leaf first, root last."""
        ttl = self.lifetime(requested_ttl)
        checked = csr.check(csr_pem, caller)
        if checked.identity.trust_domain != self.trust_domain:
            raise CaError(
                INVALID_ARGUMENT,
                "wrong_trust_domain",
                f"{checked.identity.uri} is not in this CA's trust domain {self.trust_domain}",
            )
        now = self.clock().replace(microsecond=0)
        not_after = min(now + dt.timedelta(seconds=ttl), self.signing_cert.not_valid_after_utc)
        leaf = certs.workload_svid(
            checked.public_key, checked.identity.uri, self.signing_cert, self.signing_key, now, not_after
        )
        return [certs.to_pem(leaf), *self.chain_pems()]

    def server_credentials(self, dns_names, ip_addresses, ttl: float = 365 * 86400.0) -> tuple[bytes, bytes]:
        """A fresh key and serving certificate chain for citadel itself: (key PEM, chain PEM)."""
        key = keys.generate("ec-p256")
        now = self.clock().replace(microsecond=0)
        not_after = min(now + dt.timedelta(seconds=ttl), self.signing_cert.not_valid_after_utc)
        leaf = certs.server_cert(
            key.public_key(), dns_names, ip_addresses, self.signing_cert, self.signing_key,
            now - certs.CA_BACKDATE, not_after,
        )  # fmt: skip
        return keys.to_pem(key), "".join([certs.to_pem(leaf), *self.chain_pems()]).encode()

    def identity_of_peer(self, peer_chain_pem: bytes | str) -> spiffe.Identity:
        """The identity of a caller that presented a certificate over mTLS, to renew.

        It must be issued by this CA's signing certificate, be valid now, and name one SPIFFE ID in our
        trust domain. The TLS layer has already checked the chain; this does not rely on that alone."""
        data = peer_chain_pem.encode() if isinstance(peer_chain_pem, str) else peer_chain_pem
        try:
            leaf = x509.load_pem_x509_certificates(data)[0]
        except (ValueError, IndexError):
            raise CaError(
                UNAUTHENTICATED, "bad_client_cert", "the client certificate does not parse"
            ) from None
        try:
            leaf.verify_directly_issued_by(self.signing_cert)
        except (ValueError, TypeError, InvalidSignature):
            raise CaError(
                UNAUTHENTICATED, "bad_client_cert", "the client certificate was not issued by this CA"
            ) from None
        now = self.clock()
        if not (leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc):
            raise CaError(UNAUTHENTICATED, "expired_client_cert", "the client certificate is not valid now")
        uris = certs.uri_sans(leaf)
        if len(uris) != 1:
            raise CaError(
                UNAUTHENTICATED, "bad_client_cert", "the client certificate has no single SPIFFE ID"
            )
        try:
            identity = spiffe.parse(uris[0])
        except ValueError as e:
            raise CaError(UNAUTHENTICATED, "bad_client_cert", f"the client certificate: {e}") from None
        if identity.trust_domain != self.trust_domain:
            raise CaError(UNAUTHENTICATED, "bad_client_cert", f"{identity.uri} is not in our trust domain")
        return identity
