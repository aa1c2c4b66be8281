"""Bootstrap tokens: JWTs (HS256) signed with citadel's token key, naming a namespace and service account.

Pure: the key and the clock are passed in. Only HS256 is accepted, so an `alg: none` or an RS/HS
confusion cannot slip through.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, hmac

from citadel.ca.errors import UNAUTHENTICATED, CaError

ISSUER = "isthmus-citadel"
AUDIENCE = "istio-ca"
KEY_BYTES = 32


@dataclass(frozen=True)
class TokenClaims:
    namespace: str
    service_account: str
    expires_at: float


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, signing_input: bytes) -> hmac.HMAC:
    mac = hmac.HMAC(key, hashes.SHA256())
    mac.update(signing_input)
    return mac


def create(key: bytes, namespace: str, service_account: str, ttl: float, now: float | None = None) -> str:
    issued = int(time.time() if now is None else now)
    header = {"alg": "HS256", "typ": "JWT"}
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": f"system:serviceaccount:{namespace}:{service_account}",
        "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": service_account}},
        "iat": issued,
        "exp": issued + max(1, int(ttl)),
    }
    signing_input = ".".join(_b64(json.dumps(p, separators=(",", ":")).encode()) for p in (header, claims))
    signature = _mac(key, signing_input.encode()).finalize()
    return f"{signing_input}.{_b64(signature)}"


def _refuse(reason: str, message: str) -> CaError:
    return CaError(UNAUTHENTICATED, reason, message)


def verify(key: bytes, token: str, now: float | None = None) -> TokenClaims:
    """Return the token's claims, or raise CaError(UNAUTHENTICATED) saying why it is refused."""
    parts = token.split(".")
    if len(parts) != 3:
        raise _refuse("malformed_token", "the bearer token is not a JWT (expected header.claims.signature)")
    try:
        header = json.loads(_unb64(parts[0]))
        claims = json.loads(_unb64(parts[1]))
        signature = _unb64(parts[2])
    except ValueError:
        raise _refuse("malformed_token", "the bearer token does not decode as a JWT") from None
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        alg = header.get("alg") if isinstance(header, dict) else None
        raise _refuse("invalid_token", f"the token's algorithm {alg!r} is not accepted (HS256 only)")
    try:
        _mac(key, f"{parts[0]}.{parts[1]}".encode()).verify(signature)
    except InvalidSignature:
        raise _refuse("invalid_token", "the token's signature is not valid (not signed by citadel)") from None
    if not isinstance(claims, dict) or claims.get("iss") != ISSUER or claims.get("aud") != AUDIENCE:
        raise _refuse("invalid_token", "the token's issuer or audience is not citadel's")
    exp = claims.get("exp")
    if not isinstance(exp, int | float):
        raise _refuse("invalid_token", "the token has no expiry (exp)")
    current = time.time() if now is None else now
    if current >= exp:
        raise _refuse("expired_token", f"the token expired {int(current - exp)}s ago")
    k8s = claims.get("kubernetes.io") or {}
    namespace = k8s.get("namespace") if isinstance(k8s, dict) else None
    sa = (k8s.get("serviceaccount") or {}).get("name") if isinstance(k8s, dict) else None
    if not isinstance(namespace, str) or not isinstance(sa, str):
        raise _refuse("invalid_token", "the token names no namespace and service account")
    return TokenClaims(namespace, sa, float(exp))
