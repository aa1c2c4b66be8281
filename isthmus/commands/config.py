"""`isthmus apply`, `delete`, `get` and `analyze`: Istio configuration through pilot's HTTP apply API.

apply/delete/get talk to pilot (``--pilot URL``, env ISTHMUS_PILOT, default http://127.0.0.1:15014);
``analyze`` runs the same validators offline and exits 1 when it finds an error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

DEFAULT_PILOT = "http://127.0.0.1:15014"
ENV_PILOT = "ISTHMUS_PILOT"


def register(subparsers) -> None:
    pilot_help = f"pilot's HTTP address (env {ENV_PILOT}, default {DEFAULT_PILOT})"

    def add_pilot(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--pilot", default=os.environ.get(ENV_PILOT, DEFAULT_PILOT), metavar="URL", help=pilot_help
        )

    def add_files(p: argparse.ArgumentParser, verb: str) -> None:
        p.add_argument(
            "-f",
            "--filename",
            action="append",
            required=True,
            metavar="FILE|DIR",
            help=f"YAML/JSON file or directory (its *.yaml, *.yml, *.json) to {verb}; '-' reads stdin; repeatable",
        )
        p.add_argument("-n", "--namespace", help="namespace for documents that name none (default: default)")

    apply = subparsers.add_parser(
        "apply",
        help="apply Istio YAML to pilot",
        description="Send every document of the given files to pilot in one request: either all of it is "
        "accepted, or none of it (problems are printed with file, line, kind/namespace/name and field path).",
    )
    add_files(apply, "apply")
    add_pilot(apply)
    apply.set_defaults(run=cmd_apply, parser=apply)

    delete = subparsers.add_parser(
        "delete",
        help="delete the resources named in Istio YAML files",
        description="Delete from pilot every resource (kind, namespace, name) that the given files define.",
    )
    add_files(delete, "delete")
    add_pilot(delete)
    delete.set_defaults(run=cmd_delete, parser=delete)

    get = subparsers.add_parser(
        "get",
        help="list or show Istio resources held by pilot",
        description="List resources of one kind (name, plural or short name: virtualservices, vs, dr, se, "
        "we, gw, sidecar, envoyfilter, pa, ap, ra), or show one by NAME.",
    )
    get.add_argument("kind", metavar="KIND")
    get.add_argument("name", nargs="?", metavar="NAME")
    get.add_argument("-n", "--namespace", default="default", help="namespace (default: default)")
    get.add_argument("-A", "--all-namespaces", action="store_true", help="list across all namespaces")
    get.add_argument(
        "-o", "--output", choices=("table", "yaml", "json"), default="table", help="output format"
    )
    add_pilot(get)
    get.set_defaults(run=cmd_get, parser=get)

    analyze = subparsers.add_parser(
        "analyze",
        help="validate Istio YAML offline (exit 1 on errors)",
        description="Run pilot's validators on the given files without a pilot: structure, unsupported "
        "fields, regexes, weights, subsets, duplicate hosts, unknown hosts. Kubernetes Service objects in "
        "the input count as known hosts. Exits 1 if any error is found, 0 otherwise (warnings only).",
    )
    add_files(analyze, "analyze")
    analyze.add_argument(
        "--domain", default="cluster.local", help="DNS domain suffix (default cluster.local)"
    )
    analyze.set_defaults(run=cmd_analyze, parser=analyze)


# ---------------------------------------------------------------------------- helpers


def _read_documents(names: list[str]) -> tuple[list[dict], list[str]]:
    """[{"file", "content"}] for every file named (directories expand to their YAML files), errors."""
    from pilot.config.parse import yaml_files

    docs, errors = [], []
    for name in names:
        if name == "-":
            docs.append({"file": "<stdin>", "content": sys.stdin.read()})
            continue
        path = Path(name)
        if not path.exists():
            errors.append(f"error: {name}: no such file or directory")
            continue
        files = yaml_files(path)
        if path.is_dir() and not files:
            errors.append(f"error: {name}: no .yaml, .yml or .json files in this directory")
        for f in files:
            try:
                docs.append({"file": str(f), "content": f.read_text(encoding="utf-8")})
            except (OSError, UnicodeDecodeError) as e:
                errors.append(f"error: {f}: cannot read: {e}")
    return docs, errors


def _quiet_httpx() -> None:
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)  # no per-request info lines on the user's terminal


def _post(pilot: str, path: str, payload: dict, namespace: str | None):
    import httpx

    _quiet_httpx()
    params = {"namespace": namespace} if namespace else {}
    return httpx.post(pilot.rstrip("/") + path, json=payload, params=params, timeout=30.0)


def _print_problems(problems: list[dict]) -> None:
    for p in problems:
        print(p.get("text") or p.get("message"), file=sys.stderr)


def _unreachable(pilot: str, e: Exception) -> int:
    print(f"error: cannot reach pilot at {pilot}: {e} (set --pilot or {ENV_PILOT})", file=sys.stderr)
    return 1


def _bulk(args, path: str) -> int:
    import httpx

    docs, errors = _read_documents(args.filename)
    for e in errors:
        print(e, file=sys.stderr)
    if errors:
        return 1
    try:
        resp = _post(args.pilot, path, {"documents": docs}, args.namespace)
    except httpx.HTTPError as e:
        return _unreachable(args.pilot, e)
    try:
        body = resp.json()
    except ValueError:
        print(f"error: pilot answered {resp.status_code}: {resp.text[:500]}", file=sys.stderr)
        return 1
    if resp.status_code >= 400:
        _print_problems(body.get("problems") or [])
        print(f"error: {body.get('message') or resp.status_code}", file=sys.stderr)
        return 1
    for r in body.get("results", []):
        print(f"{r['resource']} {r['action']}")
    _print_problems(body.get("problems") or [])
    return 0


# ---------------------------------------------------------------------------- commands


def cmd_apply(args, parser) -> int:
    return _bulk(args, "/apis/isthmus.io/v1/apply")


def cmd_delete(args, parser) -> int:
    return _bulk(args, "/apis/isthmus.io/v1/delete")


def cmd_get(args, parser) -> int:
    import httpx
    import yaml

    from pilot.config.kinds import lookup

    kind = lookup(args.kind)
    if kind is None:
        parser.error(f"unknown kind {args.kind!r}")
    if args.name and args.all_namespaces:
        parser.error("NAME and --all-namespaces do not go together")
    _quiet_httpx()
    base = f"{args.pilot.rstrip('/')}/apis/{kind.group}/{kind.preferred_version}"
    if args.all_namespaces:
        url = f"{base}/{kind.plural}"
    else:
        url = f"{base}/namespaces/{args.namespace}/{kind.plural}" + (f"/{args.name}" if args.name else "")
    try:
        resp = httpx.get(url, timeout=30.0)
    except httpx.HTTPError as e:
        return _unreachable(args.pilot, e)
    try:
        body = resp.json()
    except ValueError:
        print(f"error: pilot answered {resp.status_code}: {resp.text[:500]}", file=sys.stderr)
        return 1
    if resp.status_code >= 400:
        print(f"error: {body.get('message') or resp.status_code}", file=sys.stderr)
        return 1
    if args.output == "json":
        print(json.dumps(body, indent=2))
    elif args.output == "yaml":
        print(yaml.safe_dump(body, sort_keys=False).rstrip())
    else:
        items = [body] if args.name else body.get("items", [])
        if not items:
            where = "any namespace" if args.all_namespaces else f"namespace {args.namespace}"
            print(f"No {kind.plural} found in {where}.", file=sys.stderr)
            return 0
        print(_table(kind.name, items))
    return 0


def _table(kind: str, items: list[dict]) -> str:
    def summary(item: dict) -> list[str]:
        spec = item.get("spec") or {}
        if kind in ("VirtualService", "ServiceEntry"):
            cols = [",".join(spec.get("hosts") or [])]
            if kind == "VirtualService":
                cols.insert(0, ",".join(spec.get("gateways") or []))
            return cols
        if kind == "DestinationRule":
            return [str(spec.get("host", ""))]
        return []

    extra = {"VirtualService": ["GATEWAYS", "HOSTS"], "ServiceEntry": ["HOSTS"], "DestinationRule": ["HOST"]}
    rows = [["NAMESPACE", "NAME", *extra.get(kind, [])]]
    for item in items:
        m = item.get("metadata") or {}
        rows.append([m.get("namespace", ""), m.get("name", ""), *summary(item)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def cmd_analyze(args, parser) -> int:
    from pilot.config import problems as P
    from pilot.config.parse import ParseResult, merge, parse_text
    from pilot.config.semantic import fqdn
    from pilot.config.store import ConfigStore

    docs, errors = _read_documents(args.filename)
    for e in errors:
        print(e, file=sys.stderr)
    parsed = ParseResult()
    for d in docs:
        merge(parsed, parse_text(d["content"], d["file"], args.namespace))
    hosts = set()
    for other in parsed.others:  # Kubernetes objects in the input: Services are known hosts
        meta = other.get("metadata") or {}
        if other.get("kind") == "Service" and meta.get("name"):
            hosts.add(fqdn(meta["name"], meta.get("namespace") or args.namespace or "default", args.domain))
    problems = [
        p
        for p in parsed.problems
        if not (p.code == P.UNKNOWN_KIND and "is not an Istio kind" in p.message)  # k8s objects: inputs only
    ]
    if not P.has_errors(problems):
        store = ConfigStore(domain=args.domain, known_hosts=lambda: hosts)
        problems += store.apply(parsed.configs, "analyze", lines=parsed.lines)
    for p in problems:
        print(p)
    n_err = sum(p.is_error for p in problems)
    n_warn = len(problems) - n_err
    if not problems:
        print(f"✔ No validation issues found when analyzing {len(parsed.configs)} resource(s).")
    else:
        print(f"{n_err} error(s), {n_warn} warning(s) in {len(parsed.configs)} resource(s).", file=sys.stderr)
    return 1 if (n_err or errors) else 0
