"""citadel's HTTP endpoint. Scaffold: only /ready and /metrics so far; the rest comes with citadel's own issue."""

from __future__ import annotations

from isthmus import healthserver


def serve(http_addr: tuple[str, int]) -> int:
    return healthserver.serve("citadel", http_addr)
