"""Istio durations (Go syntax: ``7s``, ``100ms``, ``1m30s``, ``1.5h``) → protobuf JSON (``"90s"``)."""

from __future__ import annotations

import re

_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|us|µs|ns|h|m|s)")


def seconds(value: str | int | float) -> float:
    """Seconds in an Istio duration; raises ValueError naming the value."""
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    pos = 0
    total = 0.0
    for m in _PART.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(f"'{value}' is not a duration (e.g. 7s, 100ms, 1m30s)")
    return total


def to_json(value: str | int | float) -> str:
    s = seconds(value)
    whole = int(s)
    nanos = round((s - whole) * 1e9)
    if nanos == 0:
        return f"{whole}s"
    return f"{whole}.{nanos:09d}".rstrip("0") + "s"
