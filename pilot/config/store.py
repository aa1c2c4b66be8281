"""ConfigStore: the accepted configuration, changed all-or-nothing, with change notifications."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Iterable

from pilot.config import problems as P
from pilot.config import semantic
from pilot.model.config import Config, ConfigKey, ConfigSnapshot

log = logging.getLogger("pilot.config")

Subscriber = Callable[[set[ConfigKey], ConfigSnapshot], None]
Persist = Callable[[set[ConfigKey], ConfigSnapshot, ConfigSnapshot], None]


class ConfigStore:
    """Thread-safe holder of the current ``ConfigSnapshot``.

    ``apply`` validates a whole request against the snapshot it would produce and either takes all of
    it or none of it; ``delete`` removes keys; ``snapshot`` returns the current immutable snapshot.
    Subscribers are called after every change, in order, on the changing thread, with the set of keys
    that changed and the new snapshot. They must be quick and must not call back into the store (the
    xDS server just records the event for its debouncer).
    """

    def __init__(
        self,
        domain: str = "cluster.local",
        known_hosts: Callable[[], Iterable[str]] | None = None,
        persist: Persist | None = None,
    ) -> None:
        self.domain = domain
        # called with (changed keys, old snapshot, new snapshot) before a change is taken; an OSError
        # refuses the change (``pilot.config.persist``: applied config survives a restart)
        self._persist = persist
        self._known_hosts = known_hosts
        self._lock = threading.RLock()
        self._snapshot = ConfigSnapshot()
        self._subscribers: list[Subscriber] = []
        self._next_rv = 1

    # ------------------------------------------------------------------ reads

    def snapshot(self) -> ConfigSnapshot:
        return self._snapshot

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call `callback(changed, snapshot)` after every change; returns a function that unsubscribes."""
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def context(self, lines: dict | None = None) -> semantic.Context:
        known = None
        if self._known_hosts is not None:
            try:
                known = frozenset(self._known_hosts())
            except Exception:  # a registry hiccup must not block config changes
                log.exception("known_hosts failed")
        return semantic.Context(domain=self.domain, known_hosts=known, lines=dict(lines or {}))

    # ------------------------------------------------------------------ writes

    def apply(
        self,
        configs: list[Config],
        source: str = "api",
        *,
        create_only: bool = False,
        deletes: Iterable[ConfigKey] = (),
        lines: dict | None = None,
    ) -> list[P.Problem]:
        """Validate and take all of `configs` (and `deletes`), or none of them.

        Returns every problem found; when one is an error nothing changed. `create_only` refuses a key
        that already exists (HTTP POST). `source` is recorded on configs that have none (e.g. "api").
        `lines` maps (resource, path) to a line number for messages (from ``parse.ParseResult.lines``).
        """
        problems: list[P.Problem] = []
        seen: dict[ConfigKey, Config] = {}
        for c in configs:
            if c.key in seen:
                problems.append(
                    P.error(
                        P.DUPLICATE,
                        f"defined twice in one request (also in {seen[c.key].source or source})",
                        file=c.source or source,
                        resource=str(c.key),
                    )
                )
            seen[c.key] = c
        deletes = [k for k in deletes if k not in seen]
        with self._lock:
            current = self._snapshot
            for c in configs:
                if create_only and current.get(*_k(c.key)) is not None:
                    problems.append(
                        P.error(
                            P.ALREADY_EXISTS, "already exists", file=c.source or source, resource=str(c.key)
                        )
                    )
            if P.has_errors(problems):
                return problems
            upserts = []
            for c in configs:
                c = dataclasses.replace(c, source=c.source or source)
                old = current.get(*_k(c.key))
                if old is not None and _same(old, c):
                    continue  # unchanged: no new version, no push
                upserts.append(dataclasses.replace(c, resource_version=self._next_rv))
                self._next_rv += 1
            present_deletes = [k for k in deletes if current.get(*_k(k)) is not None]
            candidate = current.with_changes(upserts, present_deletes)
            changed = {c.key for c in upserts} | set(present_deletes)
            problems += semantic.check(candidate, changed | {c.key for c in configs}, self.context(lines))
            if P.has_errors(problems) or not changed:
                return problems
            failed = self._commit(candidate, changed)
            if failed is not None:
                return problems + [failed]
        return problems

    def delete(self, keys: Iterable[ConfigKey]) -> tuple[list[ConfigKey], list[P.Problem]]:
        """Remove `keys`; returns (the keys that existed and were removed, warnings about references)."""
        with self._lock:
            current = self._snapshot
            present = [k for k in keys if current.get(*_k(k)) is not None]
            if not present:
                return [], []
            candidate = current.with_changes([], present)
            warnings = [p for p in semantic.check(candidate, set(present), self.context()) if not p.is_error]
            failed = self._commit(candidate, set(present))
            if failed is not None:
                return [], [failed]
        return present, warnings

    def restore(self, configs: list[Config]) -> None:
        """Take configs that were accepted before (pilot's start-up, from ``--config-store``) as they
        are: no cross-resource checks (they passed them when applied; as the Kubernetes API server,
        the store does not re-judge what it holds), resource versions kept and never reused."""
        with self._lock:
            current = self._snapshot
            if not configs:
                return
            candidate = current.with_changes(list(configs), [])
            self._next_rv = max([self._next_rv] + [c.resource_version + 1 for c in configs])
            self._snapshot = candidate  # already stored: no persist call
            self._notify(candidate, {c.key for c in configs})

    def replace_source(
        self, source: str, configs: list[Config], lines: dict | None = None
    ) -> list[P.Problem]:
        """Make `source` (a file) hold exactly `configs`: upsert them, delete what it held before and no
        longer does. All-or-nothing, like ``apply``."""
        with self._lock:
            current = self._snapshot
            keys = {c.key for c in configs}
            stale = [c.key for c in current.all() if c.source == source and c.key not in keys]
            return self.apply(
                [dataclasses.replace(c, source=source) for c in configs], source, deletes=stale, lines=lines
            )

    def _commit(self, candidate: ConfigSnapshot, changed: set[ConfigKey]) -> P.Problem | None:
        """Take `candidate`, once it is stored durably (when a persist hook is set); returns the
        problem that refused it, if any."""
        if self._persist is not None:
            try:
                self._persist(set(changed), self._snapshot, candidate)
            except OSError as e:
                log.error("config.persist_failed error=%s", e)
                return P.error(
                    "ConfigStoreError", f"could not store the change durably, nothing changed: {e}"
                )
        self._snapshot = candidate
        self._notify(candidate, changed)
        return None

    def _notify(self, candidate: ConfigSnapshot, changed: set[ConfigKey]) -> None:
        for callback in list(self._subscribers):
            try:
                callback(set(changed), candidate)
            except Exception:
                log.exception("config subscriber failed")


def _k(key: ConfigKey) -> tuple[str, str, str]:
    return key.kind, key.namespace, key.name


def _same(a: Config, b: Config) -> bool:
    fields = ("spec", "labels", "annotations", "group", "version", "source")
    return all(getattr(a, f) == getattr(b, f) for f in fields)
