"""Watch ``--config-dir``: poll the YAML files' mtimes and sizes (no inotify), apply what changed.

Each file is one source in the ConfigStore: a changed file replaces exactly what it defined before; a
removed file deletes its resources; a bad file is reported (logged, and kept in ``problems``) and the
previous content of that file keeps being served. The first scan retries files that failed only because
of another file (e.g. a VirtualService applied before its DestinationRule) until nothing more applies.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from pilot.config import problems as P
from pilot.config.parse import YAML_SUFFIXES, parse_text
from pilot.config.store import ConfigStore

log = logging.getLogger("pilot.config.watcher")


class DirWatcher:
    def __init__(self, store: ConfigStore, directory: str | Path, interval: float = 0.5) -> None:
        self.store = store
        self.directory = Path(directory).resolve()
        self.interval = interval
        self.problems: dict[str, list[P.Problem]] = {}  # file -> problems of its last attempt
        self._seen: dict[str, tuple[int, int]] = {}  # file -> (mtime_ns, size) last attempted
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.scans = 0

    def _files(self) -> dict[str, tuple[int, int]]:
        out = {}
        try:
            entries = list(self.directory.rglob("*"))
        except OSError:
            return out
        for p in entries:
            if p.suffix in YAML_SUFFIXES and not p.name.startswith("."):
                try:
                    st = p.stat()
                except OSError:
                    continue
                if p.is_file():
                    out[str(p)] = (st.st_mtime_ns, st.st_size)
        return out

    def scan(self) -> bool:
        """One poll: apply changed files, delete removed ones. Returns whether anything was attempted."""
        now = self._files()
        removed = [f for f in self._seen if f not in now]
        changed = sorted(f for f, sig in now.items() if self._seen.get(f) != sig)
        for f in removed:
            self._seen.pop(f, None)
            self.problems.pop(f, None)
            keys = [c.key for c in self.store.snapshot().all() if c.source == f]
            deleted, _ = self.store.delete(keys)
            log.info("config.file_removed file=%s deleted=%d", f, len(deleted))
        pending = list(changed)
        if removed or changed:  # a change may unblock a file that failed before (e.g. a missing subset)
            pending += sorted(f for f in now if f not in changed and P.has_errors(self.problems.get(f, [])))
        while pending:  # retry files that failed while others made progress (order independence)
            progress, failed = False, []
            for f in pending:
                self._seen[f] = now[f]
                if self._load(f):
                    progress = True
                else:
                    failed.append(f)
            if not progress or len(failed) == len(pending):
                break
            pending = failed
        self.scans += 1
        return bool(removed or changed)

    def _load(self, f: str) -> bool:
        try:
            text = Path(f).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            self.problems[f] = [P.error(P.PARSE, f"cannot read: {e}", file=f)]
            self._report(f)
            return False
        parsed = parse_text(text, f)
        problems = list(parsed.problems)
        snap = self.store.snapshot()
        for c in parsed.configs:
            old = snap.get(c.kind, c.namespace, c.name)
            if old is not None and old.source != f and old.source in self._seen:
                problems.append(
                    P.error(P.DUPLICATE, f"already defined in {old.source}", file=f, resource=str(c.key))
                )
        if not P.has_errors(problems):
            problems += self.store.replace_source(f, parsed.configs, parsed.lines)
        self.problems[f] = problems
        self._report(f)
        return not P.has_errors(problems)

    def _report(self, f: str) -> None:
        for p in self.problems.get(f, []):
            (log.error if p.is_error else log.warning)("config.problem %s", p)
        if P.has_errors(self.problems.get(f, [])):
            log.error("config.file_rejected file=%s (its previous content keeps being served)", f)

    def start(self) -> DirWatcher:
        self.scan()
        self._thread = threading.Thread(target=self._run, name="config-dir-watcher", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.scan()
            except Exception:  # never let a bad file or a race end the watcher
                log.exception("config dir scan failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
