"""Why a request was refused. Pure: the gRPC server maps `kind` to a status code."""

from __future__ import annotations

# kinds, mapped to gRPC codes by citadel.server
INVALID_ARGUMENT = "invalid_argument"
PERMISSION_DENIED = "permission_denied"
UNAUTHENTICATED = "unauthenticated"


class CaError(Exception):
    """A refusal with a stable metric `reason` (e.g. "identity_mismatch") and a message for the caller."""

    def __init__(self, kind: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.reason = reason
        self.message = message
