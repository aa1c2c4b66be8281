"""Upstream failures, each mapping to the response flag the router sets (as Envoy does)."""

from __future__ import annotations


class UpstreamError(Exception):
    """Base class. `flag` is the Envoy response flag; `reset_reason` is the text after
    ``upstream connect error or disconnect/reset before headers. reset reason: ``."""

    flag = ""
    reset_reason = ""


class UpstreamConnectError(UpstreamError):
    """TCP connect refused or timed out (router: 503 UF, ``reset reason: connection failure``)."""

    flag = "UF"
    reset_reason = "connection failure"

    def __init__(self, message: str = "connection failure", *, timeout: bool = False) -> None:
        super().__init__(message)
        self.timeout = timeout


class UpstreamResetError(UpstreamError):
    """The upstream closed or reset the connection before the response headers (router: 503 UC)."""

    flag = "UC"
    reset_reason = "connection termination"


class PoolOverflow(UpstreamError):
    """A circuit breaker is open: max_pending_requests or max_requests (router: 503 UO with
    ``x-envoy-overloaded: true``)."""

    flag = "UO"
    reset_reason = "overflow"
