"""Durable storage of the configuration applied through pilot's API (``--config-store DIR``).

In Istio, config lives in the Kubernetes API server and survives an istiod restart; here it lives in
pilot. So what ``isthmus apply`` put into the ``ConfigStore`` is kept on disk, one JSON file per
resource, holding the Kubernetes-style object the user wrote and where it came from (the file name
``isthmus apply`` sent, as ``isthmus get`` and the apply API's "unchanged" answer use it)::

    DIR/<Kind>/<namespace>/<name>.json      {"source": "reviews-v3.yaml", "resource": {apiVersion, ...}}

Every file is written atomically (a temporary file in the same directory, fsync, rename, fsync of the
directory), so a crash leaves the old or the new version, never half of one. Pilot loads the files at
start-up, before it serves xDS; a file that cannot be read or does not validate stops the start-up
with its path and the reason (``ConfigStoreError``), rather than serving a mesh without it.

Config from ``--config-dir`` files (sources inside that directory) is not stored here: those files are
their own source of truth.
A resource applied through the API over one from a file is stored (the API's version is the one in
force); a file taking a stored resource back removes its stored copy.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import urllib.parse
from collections.abc import Iterable
from pathlib import Path

from pilot.config.parse import parse_text
from pilot.model.config import Config, ConfigKey, ConfigSnapshot

SUFFIX = ".json"


class ConfigStoreError(Exception):
    """A stored file is unreadable or invalid, or the directory cannot be used."""


def _part(text: str) -> str:
    # Kubernetes names cannot hold '/', but never let a name leave its directory
    return urllib.parse.quote(text, safe="") if text not in ("", ".", "..") else f"%{text or 'empty'}"


def to_object(c: Config) -> dict:
    """The Kubernetes-style object of a stored Config (what ``isthmus apply`` took)."""
    meta: dict = {"name": c.name, "namespace": c.namespace, "resourceVersion": str(c.resource_version)}
    if c.labels:
        meta["labels"] = dict(c.labels)
    if c.annotations:
        meta["annotations"] = dict(c.annotations)
    return {"apiVersion": f"{c.group}/{c.version}", "kind": c.kind, "metadata": meta, "spec": c.spec}


class PersistentConfig:
    """The files under one directory, as a set of Configs."""

    def __init__(self, directory: str | Path, config_dir: str | Path | None = None) -> None:
        self.directory = Path(directory)
        # sources inside the watched --config-dir are files, not applied config
        self._file_prefix = str(Path(config_dir).resolve()) + os.sep if config_dir else None

    def stores(self, c: Config) -> bool:
        return self._file_prefix is None or not c.source.startswith(self._file_prefix)

    def path(self, key: ConfigKey) -> Path:
        return self.directory / _part(key.kind) / _part(key.namespace) / (_part(key.name) + SUFFIX)

    # ------------------------------------------------------------------ start-up

    def open(self) -> None:
        """Create the directory if needed and check that it can be written."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=self.directory, prefix=".probe-", delete=True)
            probe.close()
        except OSError as e:
            raise ConfigStoreError(f"config store {self.directory}: cannot write there: {e}") from e

    def load(self) -> list[Config]:
        """Every stored resource, validated as when it was applied. Raises ConfigStoreError naming the
        file for anything unreadable, invalid, or stored under the wrong name."""
        if not self.directory.is_dir():
            return []
        configs: list[Config] = []
        for f in sorted(self.directory.rglob("*" + SUFFIX)):
            if any(part.startswith(".") for part in f.relative_to(self.directory).parts):
                continue  # a temporary file left by a crash mid-write: the rename never happened
            configs.append(self._load_file(f))
        return configs

    def _load_file(self, f: Path) -> Config:
        try:
            text = f.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigStoreError(f"config store file {f}: cannot read it: {e}") from e
        try:
            envelope = json.loads(text)
        except ValueError as e:
            raise ConfigStoreError(f"config store file {f}: not valid JSON: {e}") from e
        obj = envelope.get("resource") if isinstance(envelope, dict) else None
        source = envelope.get("source") if isinstance(envelope, dict) else None
        if not isinstance(obj, dict) or not isinstance(source, str):
            raise ConfigStoreError(
                f'config store file {f}: expected {{"source": FILE, "resource": one Istio resource}}'
            )
        meta = obj.get("metadata")
        rv = meta.get("resourceVersion", "0") if isinstance(meta, dict) else "0"
        result = parse_text(json.dumps(obj, indent=1), str(f))
        errors = [p for p in result.problems if p.is_error]
        if errors:
            raise ConfigStoreError(f"config store file {f} is invalid: " + "; ".join(str(p) for p in errors))
        if len(result.configs) != 1:
            raise ConfigStoreError(f"config store file {f}: expected one Istio resource")
        c = result.configs[0]
        if self.path(c.key) != f:
            raise ConfigStoreError(
                f"config store file {f}: holds {c.key}, which belongs in {self.path(c.key)}"
            )
        try:
            version = int(rv)
        except (TypeError, ValueError):
            raise ConfigStoreError(
                f"config store file {f}: metadata.resourceVersion {rv!r} is not a number"
            ) from None
        return dataclasses.replace(c, resource_version=version, source=source)

    # ------------------------------------------------------------------ changes

    def save(self, changed: Iterable[ConfigKey], old: ConfigSnapshot, new: ConfigSnapshot) -> None:
        """Make the files match `new` for `changed` keys. All or nothing: on an error the files already
        changed are put back as they were in `old`, and the OSError is raised."""
        done: list[ConfigKey] = []
        try:
            for key in sorted(changed):
                self._sync(key, new)
                done.append(key)
        except OSError:
            for key in done:
                try:
                    self._sync(key, old)
                except OSError:
                    pass
            raise

    def _sync(self, key: ConfigKey, snapshot: ConfigSnapshot) -> None:
        c = snapshot.get(key.kind, key.namespace, key.name)
        if c is not None and self.stores(c):
            envelope = {"source": c.source, "resource": to_object(c)}
            self._write(self.path(key), json.dumps(envelope, indent=1, sort_keys=True) + "\n")
        else:
            self._remove(self.path(key))

    def _write(self, path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name + ".", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        _fsync_dir(path.parent)

    def _remove(self, path: Path) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            return
        _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
