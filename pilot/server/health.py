"""pilot's readiness, for what starts it: a wait on ``/ready`` (which ``pilot.server.app`` serves)."""

from __future__ import annotations

import urllib.error
import urllib.request


def is_ready(http_addr: tuple[str, int], timeout: float = 2.0) -> bool:
    host = "127.0.0.1" if http_addr[0] in ("0.0.0.0", "") else http_addr[0]
    try:
        with urllib.request.urlopen(f"http://{host}:{http_addr[1]}/ready", timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False
