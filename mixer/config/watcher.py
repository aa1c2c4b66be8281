"""Live config: load the file at start, then poll it and swap in each new valid version.

A change is noticed by the file's (mtime, size, content hash), polled every `interval` seconds. A new
version that does not parse or validate is logged with the file and field, counted, and ignored: the
previous config stays in force. Readers take ``holder.current`` once per request, an immutable
snapshot, so a swap never changes a decision half-way.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Callable

from isthmus.log import event
from mixer.config.model import ConfigError, MixerConfig, parse

log = logging.getLogger("mixer.config")


class ConfigHolder:
    def __init__(self, path: str | None, on_result: Callable[[bool], None] = lambda ok: None) -> None:
        self.path = path
        self.current = MixerConfig()
        self.on_result = on_result
        self.listeners: list[Callable[[MixerConfig], None]] = []
        self._seen: tuple | None = None

    def load_initial(self) -> None:
        """Load the file once; raise ConfigError (or OSError) when it cannot be used."""
        if self.path is None:
            return
        stamp, text = self._read()
        self.current = parse(text, self.path)
        self._seen = stamp
        self.on_result(True)
        event(log, logging.INFO, "config.loaded", file=self.path, **_summary(self.current))

    def _read(self) -> tuple[tuple, str]:
        st = os.stat(self.path)
        with open(self.path, "rb") as f:
            data = f.read()
        return (st.st_mtime_ns, st.st_size, hashlib.sha256(data).hexdigest()), data.decode("utf-8")

    def poll_once(self) -> bool | None:
        """Reload when the file changed: True (applied), False (rejected), None (unchanged)."""
        if self.path is None:
            return None
        try:
            stamp, text = self._read()
        except (OSError, UnicodeDecodeError) as e:
            stamp = ("error", str(e))
            if stamp == self._seen:
                return None
            self._seen = stamp
            self.on_result(False)
            event(log, logging.ERROR, "config.rejected", file=self.path, error=str(e), kept="previous config")
            return False
        if stamp == self._seen:
            return None
        self._seen = stamp
        try:
            config = parse(text, self.path)
        except ConfigError as e:
            self.on_result(False)
            event(log, logging.ERROR, "config.rejected", file=self.path, error=str(e), kept="previous config")
            return False
        self.current = config
        self.on_result(True)
        for listener in self.listeners:
            listener(config)
        event(log, logging.INFO, "config.reloaded", file=self.path, **_summary(config))
        return True

    async def watch(self, interval: float = 0.5) -> None:
        while True:
            await asyncio.sleep(interval)
            self.poll_once()


def _summary(config: MixerConfig) -> dict:
    return {
        "policy_rules": len(config.policy.rules),
        "quota_domains": len(config.quota.domains),
        "failure_mode": config.quota.failure_mode,
        "max_series": config.telemetry.max_series_per_metric,
        "access_log": config.telemetry.access_log_path or "off",
    }
