"""Istio configuration in: kinds, parsing, validation, the ConfigStore and the --config-dir watcher.

Modules (pure logic apart from I/O):

- ``kinds``: the accepted kinds (networking.istio.io v1/v1beta1/v1alpha3: VirtualService,
  DestinationRule, ServiceEntry, WorkloadEntry, Gateway, Sidecar, EnvoyFilter (v1alpha3);
  security.istio.io v1/v1beta1: PeerAuthentication, AuthorizationPolicy, RequestAuthentication), their
  plural names for the HTTP API and a schema listing every field Istio defines. A field Istio defines
  that Isthmus does not implement is an error "... is not supported by Isthmus yet" (harmless metadata
  such as ``uid``, ``resourceVersion`` or ``status`` is accepted and ignored). EnvoyFilter and the
  security kinds are validated fully and accepted with a warning: later issues translate them.
- ``schema``, ``regex``: the schema language; RE2-compatible regex checks.
- ``parse``: multi-document YAML/JSON → ``ParseResult(configs, problems, lines)``; a missing
  ``metadata.namespace`` means ``default``. ``load_paths`` reads files and directories.
- ``semantic``: cross-resource checks on the snapshot a change would produce. Decisions: missing subset,
  weights ≠ 100, bad regex, two VirtualServices for one host on one gateway (or both on the mesh) are
  errors; an unknown destination host or gateway is a warning (config usually arrives before the
  workloads register); see its docstring for the full list.
- ``problems``: ``Problem(level, code, message, file, resource, path, line)``; ``str(p)`` reads
  ``error: FILE:LINE: Kind/ns/name: spec.path: message [Code]``.
- ``store``: ``ConfigStore`` (below). ``watcher``: ``DirWatcher(store, dir).start()`` polls every 0.5 s.

The ConfigStore contract (consumed by pilot.xds and pilot.server):

- ``ConfigStore(domain="cluster.local", known_hosts=None)``; ``known_hosts`` is an optional callable
  returning the registry's FQDNs, used only for the unknown-host warning.
- ``snapshot() -> ConfigSnapshot``: the current immutable snapshot (cheap; no copy).
- ``apply(configs, source="api", *, create_only=False, deletes=(), lines=None) -> list[Problem]``:
  all-or-nothing. If any returned problem is an error, nothing changed. Re-applying identical content
  changes nothing and notifies no one. Each stored Config gets a new ``resource_version``.
- ``delete(keys) -> (deleted_keys, warnings)``.
- ``replace_source(source, configs)``: make one file's resources exactly ``configs`` (the watcher).
- ``subscribe(callback) -> unsubscribe``: ``callback(changed: set[ConfigKey], snapshot)`` runs after
  every committed change, in commit order, on the thread that made the change, while the store's lock is
  held: keep it quick (enqueue and return) and do not call the store from it.
"""

from pilot.config.kinds import KINDS, Kind, lookup
from pilot.config.parse import ParseResult, load_paths, parse_text
from pilot.config.problems import ERROR, WARNING, Problem, has_errors
from pilot.config.store import ConfigStore

__all__ = [
    "ERROR",
    "KINDS",
    "WARNING",
    "ConfigStore",
    "Kind",
    "ParseResult",
    "Problem",
    "has_errors",
    "load_paths",
    "lookup",
    "parse_text",
]
