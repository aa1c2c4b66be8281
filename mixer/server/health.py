"""mixer's HTTP endpoint. Scaffold: only /ready and /metrics so far; the rest comes with mixer's own issue."""

from __future__ import annotations

from isthmus import healthserver


def serve(http_addr: tuple[str, int]) -> int:
    return healthserver.serve("mixer", http_addr)
