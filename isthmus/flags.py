"""Flag value parsers shared by the components' command lines (pure)."""

from __future__ import annotations

import argparse
import re


def host_port(text: str) -> tuple[str, int]:
    """'127.0.0.1:15014' or ':15014' (all interfaces, as in Istio) -> (host, port)."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT or :PORT, got {text!r}")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port_text)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def duration(text: str) -> float:
    """A Go/Istio-style duration ('24h', '90m', '1h30m', '500ms') in seconds."""
    pos, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text or total <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive duration like 24h, 90m or 1h30m, got {text!r}")
    return total
