"""One logging convention for every component.

Each event is one line of logfmt: ``ts=... level=info component=pilot event=xds.push proxies=3``.
The level comes from a ``--log-level`` flag or, failing that, the ``ISTHMUS_LOG_LEVEL`` environment
variable (default ``info``). Envoy's level names (trace, debug, info, warning, error, critical, off) are
accepted so that the proxy's ``-l`` flag means what an Envoy user expects.
"""

from __future__ import annotations

import logging
import os
import sys
import time

LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    "off": logging.CRITICAL + 10,
}
LEVEL_NAMES = sorted(LEVELS)
ENV_VAR = "ISTHMUS_LOG_LEVEL"


def _quote(value: object) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' ="\n\t'):
        text = '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


class LogfmtFormatter(logging.Formatter):
    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        parts = [
            f"ts={ts}.{int(record.msecs):03d}Z",
            f"level={record.levelname.lower()}",
            f"component={self.component}",
            f"logger={record.name}",
            f"event={_quote(record.getMessage())}",
        ]
        fields = getattr(record, "fields", None)
        if fields:
            parts.extend(f"{key}={_quote(val)}" for key, val in fields.items())
        if record.exc_info:
            parts.append(f"exc={_quote(self.formatException(record.exc_info))}")
        return " ".join(parts)


def parse_level(name: str | None) -> int:
    """Map a level name to a logging level; raise ValueError naming the accepted values."""
    if name is None:
        name = os.environ.get(ENV_VAR, "info")
    try:
        return LEVELS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown log level {name!r}; expected one of {', '.join(LEVEL_NAMES)}") from None


def setup(component: str, level: str | None = None, stream=None) -> None:
    """Configure the root logger for a component process. Call once from ``__main__``."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(LogfmtFormatter(component))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(parse_level(level))


def set_level(level: str) -> None:
    logging.getLogger().setLevel(parse_level(level))


def event(logger: logging.Logger, level: int, name: str, **fields: object) -> None:
    """Log one structured event: ``event(log, logging.INFO, "listener.bound", address="0.0.0.0:15001")``."""
    if logger.isEnabledFor(level):
        logger.log(level, name, extra={"fields": fields})
