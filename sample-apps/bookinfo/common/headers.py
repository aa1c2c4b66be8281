"""Which request headers a Bookinfo app passes on to its upstreams (pure; no I/O).

Istio's Bookinfo forwards the tracing headers so that one request can be followed across services,
and the `end-user` header so that routing rules can match on the signed-in user.
"""

from __future__ import annotations

from collections.abc import Mapping

TRACING_HEADERS = (
    "x-request-id",
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "x-ot-span-context",
)
USER_HEADER = "end-user"
USER_COOKIE = "end-user"
FORWARDED_HEADERS = (*TRACING_HEADERS, USER_HEADER)


def forward_headers(incoming: Mapping[str, str], user: str | None = None) -> dict[str, str]:
    """The headers to send upstream: the forwarded ones present in `incoming`, plus `end-user`.

    `incoming` must be case-insensitive or have lower-case keys (Starlette's `Headers` is both).
    `user`, when given (productpage takes it from its sign-in cookie), wins over an incoming `end-user`.
    """
    out = {name: incoming[name] for name in FORWARDED_HEADERS if name in incoming}
    if user:
        out[USER_HEADER] = user
    return out
