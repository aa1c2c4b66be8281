"""The access-log adapter: one JSON object per line for every report, to stdout or a file.

Each line carries the time, the kind (http/tcp), Istio's labels, and the measured values
(duration_ms, request/response bytes, or TCP bytes and open/close). Writes are line-buffered; a failed
write is counted by the caller and never stops aggregation.
"""

from __future__ import annotations

import json
import sys
import time
from typing import IO

from mixer.telemetry.attributes import Report


def to_line(report: Report, now: float) -> str:
    record = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z",
        "kind": report.kind,
        **report.labels,
    }
    if report.kind == "http":
        record.update(
            duration_ms=round(report.duration_ms, 3),
            request_bytes=report.request_bytes,
            response_bytes=report.response_bytes,
        )
    else:
        record.update(
            opened=report.opened,
            closed=report.closed,
            sent_bytes=report.sent_bytes,
            received_bytes=report.received_bytes,
        )
    return json.dumps(record, separators=(",", ":"), sort_keys=False)


class JsonLinesWriter:
    def __init__(self, path: str) -> None:
        self.path = path
        self._stream: IO[str] = sys.stdout if path == "-" else open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115

    def write(self, report: Report, now: float | None = None) -> None:
        self._stream.write(to_line(report, time.time() if now is None else now) + "\n")

    def flush(self) -> None:
        self._stream.flush()

    def close(self) -> None:
        if self._stream is not sys.stdout:
            self._stream.close()
        else:
            self._stream.flush()
