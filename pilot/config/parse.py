"""Multi-document YAML (or JSON) in, ``Config`` objects out, with structural validation.

A parse error names the file and line. Each document is checked against its kind's schema; every
problem names the file, ``kind/namespace/name``, the field path and, where known, the line. Pure: the
caller reads files (see ``load_paths`` for the one helper that does).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pilot.config import problems as P
from pilot.config.kinds import DNS1123_LABEL, DNS1123_SUBDOMAIN, KINDS, KNOWN_UNSUPPORTED
from pilot.config.schema import join
from pilot.model.config import Config

DEFAULT_NAMESPACE = "default"
YAML_SUFFIXES = (".yaml", ".yml", ".json")

# Kubernetes object metadata that is harmless to accept and ignore.
HARMLESS_METADATA = {
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "ownerReferences",
    "finalizers",
    "selfLink",
    "generateName",
}


@dataclass
class ParseResult:
    configs: list[Config] = field(default_factory=list)
    problems: list[P.Problem] = field(default_factory=list)
    # Kubernetes core objects seen alongside (e.g. Service in bookinfo.yaml): not applied; `analyze`
    # reads Service names from them as known hosts, like istioctl analyze does with its input files.
    others: list[dict] = field(default_factory=list)
    lines: dict[tuple[str, str], int] = field(default_factory=dict)  # (resource, path) -> line

    @property
    def ok(self) -> bool:
        return not P.has_errors(self.problems)


class _Loader(yaml.SafeLoader):
    pass


# YAML 1.1 reads "on"/"yes"/"no" as booleans; Kubernetes (YAML 1.2 via JSON) does not. Keep it simple and
# standard for what Istio users write: leave the SafeLoader as is, except timestamps stay strings.
_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _line_map(node: yaml.Node, path: str, out: dict[str, int]) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = str(k.value)
            out[join(path, key)] = k.start_mark.line + 1
            _line_map(v, join(path, key), out)
            out[join(path, key)] = k.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _line_map(v, join(path, i), out)


def _nearest_line(lines: dict[str, int], path: str) -> int | None:
    while True:
        if path in lines:
            return lines[path]
        if not path:
            return None
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""


def parse_text(text: str, file: str = "<input>", default_namespace: str | None = None) -> ParseResult:
    """Parse and structurally validate every document of `text` (YAML or JSON)."""
    result = ParseResult()
    try:
        nodes = list(yaml.compose_all(text, Loader=_Loader))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        what = getattr(e, "problem", None) or str(e)
        ctx = getattr(e, "context", None)
        msg = f"invalid YAML: {what}" + (f" ({ctx})" if ctx else "")
        result.problems.append(P.error(P.PARSE, msg, file=file, line=line))
        return result
    for index, node in enumerate(nodes):
        if node is None:
            continue
        loader = _Loader("")
        try:
            doc = loader.construct_document(node)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            result.problems.append(
                P.error(P.PARSE, f"invalid YAML: {e}", file=file, line=mark.line + 1 if mark else None)
            )
            continue
        finally:
            loader.dispose()
        if doc is None:
            continue
        lines: dict[str, int] = {}
        _line_map(node, "", lines)
        _parse_doc(doc, index, node.start_mark.line + 1, lines, file, default_namespace, result)
    return result


def _parse_doc(doc: Any, index: int, line: int, lines, file, default_ns, result: ParseResult) -> None:
    def err(code: str, msg: str, path: str = "", resource: str = "") -> None:
        result.problems.append(
            P.error(
                code, msg, file=file, resource=resource, path=path, line=_nearest_line(lines, path) or line
            )
        )

    if not isinstance(doc, dict):
        err(P.PARSE, f"document {index + 1} is a {type(doc).__name__}, not a Kubernetes-style object")
        return
    api_version, kind_name = doc.get("apiVersion"), doc.get("kind")
    if not isinstance(api_version, str) or not api_version:
        err(P.SCHEMA, "apiVersion is missing (e.g. networking.istio.io/v1)", "apiVersion")
        return
    if not isinstance(kind_name, str) or not kind_name:
        err(P.SCHEMA, "kind is missing", "kind")
        return
    group, _, version = api_version.rpartition("/")
    if kind_name.endswith("List") and isinstance(doc.get("items"), list):
        for item in doc["items"]:
            sub = dict(item) if isinstance(item, dict) else item
            _parse_doc(sub, index, line, {}, file, default_ns, result)
        return
    kind = KINDS.get(kind_name)
    if kind is None:
        if group in ("", "apps", "batch", "policy") or not group.endswith("istio.io"):
            result.others.append(doc)
            err(P.UNKNOWN_KIND, f"{api_version} {kind_name} is not an Istio kind that pilot accepts", "kind")
        elif kind_name in KNOWN_UNSUPPORTED:
            err(P.UNKNOWN_KIND, f"{kind_name} is not supported by Isthmus yet", "kind")
        else:
            err(P.UNKNOWN_KIND, f"unknown kind {kind_name} in {api_version}", "kind")
        return
    if group != kind.group or version not in kind.versions:
        err(
            P.SCHEMA,
            f"{kind_name} is served as {', '.join(f'{kind.group}/{v}' for v in kind.versions)}, not {api_version}",
            "apiVersion",
        )
        return
    meta = doc.get("metadata")
    if not isinstance(meta, dict):
        err(P.SCHEMA, "metadata with a name is required", "metadata")
        return
    name, ns = meta.get("name"), meta.get("namespace") or default_ns or DEFAULT_NAMESPACE
    resource = f"{kind_name}/{ns}/{name}"
    bad = False
    if not isinstance(name, str) or not re.fullmatch(DNS1123_SUBDOMAIN, name) or len(name) > 253:
        err(P.SCHEMA, f"name {name!r} is not a valid DNS-1123 subdomain", "metadata.name", resource)
        bad = True
    if not isinstance(ns, str) or not re.fullmatch(DNS1123_LABEL, ns) or len(ns) > 63:
        err(P.SCHEMA, f"namespace {ns!r} is not a valid DNS-1123 label", "metadata.namespace", resource)
        bad = True
    for key, value in meta.items():
        if key in ("name", "namespace") or key in HARMLESS_METADATA:
            continue
        if key in ("labels", "annotations"):
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                err(P.SCHEMA, f"{key} must map strings to strings", f"metadata.{key}", resource)
                bad = True
            continue
        err(P.SCHEMA, "unknown field", join("metadata", key), resource)
        bad = True
    for key in doc:
        if key not in ("apiVersion", "kind", "metadata", "spec", "status"):
            err(P.SCHEMA, "unknown field", join("", key), resource)
            bad = True
    spec = doc.get("spec")
    if spec is None:
        spec = {}
    issues: list = []
    kind.spec.check(spec, "spec", issues)
    for code, path, msg in issues:
        err(code, msg, path, resource)
    if issues or bad:
        return
    for path, ln in lines.items():
        result.lines[(resource, path)] = ln
    result.configs.append(
        Config(
            kind=kind_name,
            group=group,
            version=version,
            namespace=ns,
            name=name,
            spec=spec,
            labels=dict(meta.get("labels") or {}),
            annotations=dict(meta.get("annotations") or {}),
            source=file,
        )
    )


def yaml_files(path: Path) -> list[Path]:
    """`path` itself, or the YAML/JSON files directly inside it (sorted by name, as kubectl -f DIR)."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and p.suffix in YAML_SUFFIXES)
    return [path]


def load_paths(paths: list[Path], default_namespace: str | None = None) -> ParseResult:
    """Read and parse files and directories; unreadable files become problems."""
    total = ParseResult()
    for top in paths:
        if not top.exists():
            total.problems.append(P.error(P.PARSE, "no such file or directory", file=str(top)))
            continue
        for f in yaml_files(top):
            try:
                text = f.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                total.problems.append(P.error(P.PARSE, f"cannot read: {e}", file=str(f)))
                continue
            merge(total, parse_text(text, str(f), default_namespace))
    return total


def merge(into: ParseResult, other: ParseResult) -> None:
    into.configs += other.configs
    into.problems += other.problems
    into.others += other.others
    into.lines.update(other.lines)
