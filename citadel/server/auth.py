"""Who is calling: a bootstrap token in `authorization: Bearer <token>` metadata, or (to renew) the
caller's current certificate presented over mTLS. Pure: metadata and the peer's PEM come in."""

from __future__ import annotations

from collections.abc import Iterable

from citadel.ca import spiffe, tokens
from citadel.ca.authority import CertificateAuthority
from citadel.ca.errors import UNAUTHENTICATED, CaError


def bearer_token(metadata: Iterable[tuple[str, str | bytes]]) -> str | None:
    for key, value in metadata:
        if key.lower() == "authorization":
            text = value.decode() if isinstance(value, bytes) else value
            scheme, _, token = text.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise CaError(
                    UNAUTHENTICATED, "malformed_token", "authorization metadata must be 'Bearer <token>'"
                )
            return token.strip()
    return None


def authenticate(
    ca: CertificateAuthority,
    token_key: bytes,
    metadata: Iterable[tuple[str, str | bytes]],
    peer_cert_pem: bytes | None,
    now: float | None = None,
) -> tuple[spiffe.Identity, str]:
    """Return (identity, method) where method is "token" or "mtls"; raise CaError(UNAUTHENTICATED)."""
    token = bearer_token(metadata)
    if token is not None:
        claims = tokens.verify(token_key, token, now=now)
        try:
            return ca.identity(claims.namespace, claims.service_account), "token"
        except ValueError as e:
            raise CaError(UNAUTHENTICATED, "invalid_token", f"the token's identity: {e}") from None
    if peer_cert_pem:
        return ca.identity_of_peer(peer_cert_pem), "mtls"
    raise CaError(
        UNAUTHENTICATED,
        "no_credentials",
        "no credentials: send 'authorization: Bearer <token>' or present your current certificate over mTLS",
    )
