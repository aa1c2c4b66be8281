"""`isthmus proxy-config clusters|listeners|routes|endpoints|secret PROXY`: a proxy's live config, read
from its Envoy admin ``/config_dump`` (``?include_eds`` for endpoints), in istioctl's tables.

Which admin: ``--admin URL`` when given; otherwise PROXY (a NAME from ``isthmus proxy-status`` or a
node id) is looked up in pilot's ``/debug/syncz``, whose ``admin`` field is the proxy's admin address
(its ``ISTHMUS_ADMIN`` node metadata, else ``<workload IP>:15000``). ``-o json`` prints the raw section.
"""

from __future__ import annotations

import argparse
import json
import sys

import httpx

from isthmus.commands.proxy_status import DEFAULT_PILOT, fetch_syncz, select

SECTIONS = {
    "clusters": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
    "listeners": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
    "routes": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
    "endpoints": "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump",
    "secret": "type.googleapis.com/envoy.admin.v3.SecretsConfigDump",
}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "proxy-config",
        help="a proxy's clusters, listeners, routes, endpoints or secrets (like istioctl proxy-config)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("section", choices=sorted(SECTIONS))
    p.add_argument(
        "proxy", nargs="?", help="NAME (as proxy-status shows it) or node id; optional with --admin"
    )
    p.add_argument("--admin", metavar="URL", help="the proxy's admin address, e.g. http://127.0.0.12:15000")
    p.add_argument(
        "--pilot", default=DEFAULT_PILOT, metavar="URL", help=f"pilot's HTTP address ({DEFAULT_PILOT})"
    )
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    p.set_defaults(run=run, parser=p)


def admin_url(args) -> str:
    if args.admin:
        return args.admin if "://" in args.admin else f"http://{args.admin}"
    entries = select(fetch_syncz(args.pilot), args.proxy)
    if not entries:
        raise LookupError(f"proxy {args.proxy!r} is not connected to pilot at {args.pilot}")
    if not entries[0].get("admin"):
        raise LookupError(f"pilot knows no admin address for {args.proxy!r}: pass --admin URL")
    return f"http://{entries[0]['admin']}"


def section_of(dump: dict, section: str) -> dict:
    for config in dump.get("configs", []):
        if config.get("@type") == SECTIONS[section]:
            return config
    return {}


def _typed(item: dict, key: str) -> dict:
    return item.get(key) or {}


def rows(section: str, data: dict) -> list[tuple]:
    out: list[tuple] = []
    if section == "clusters":
        out.append(("SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE", "DESTINATION RULE"))
        items = [
            _typed(c, "cluster")
            for c in data.get("static_clusters", []) + data.get("dynamic_active_clusters", [])
        ]
        for c in sorted(items, key=lambda c: c.get("name", "")):
            parts = c.get("name", "").split("|")
            if len(parts) == 4:
                direction, port, subset, host = parts
            else:
                direction, port, subset, host = "-", "-", "-", c.get("name", "")
            dr = (c.get("metadata", {}).get("filter_metadata", {}).get("istio", {}) or {}).get("config", "")
            out.append(
                (
                    host,
                    port,
                    subset or "-",
                    direction,
                    c.get("type", "EDS" if c.get("eds_cluster_config") else "-"),
                    dr or "-",
                )
            )
    elif section == "listeners":
        out.append(("NAME", "ADDRESS", "PORT", "FILTER CHAINS"))
        items = [_typed(x, "listener") for x in data.get("static_listeners", [])]
        items += [_typed(_typed(x, "active_state"), "listener") for x in data.get("dynamic_listeners", [])]
        for x in sorted(items, key=lambda x: x.get("name", "")):
            sock = x.get("address", {}).get("socket_address", {})
            addr = sock.get("address", "") or ("api_listener" if "api_listener" in x else "-")
            out.append(
                (x.get("name", ""), addr, sock.get("port_value", "-"), len(x.get("filter_chains", [])))
            )
    elif section == "routes":
        out.append(("NAME", "VHOST NAME", "DOMAINS", "MATCH"))
        items = [
            _typed(x, "route_config")
            for x in data.get("static_route_configs", []) + data.get("dynamic_route_configs", [])
        ]
        for rc in sorted(items, key=lambda r: r.get("name", "")):
            for vh in rc.get("virtual_hosts", []):
                matches = [_match(r.get("match", {})) for r in vh.get("routes", [])] or ["-"]
                out.append(
                    (rc.get("name", ""), vh.get("name", ""), ",".join(vh.get("domains", [])[:3]), matches[0])
                )
                out.extend(("", "", "", m) for m in matches[1:])
    elif section == "endpoints":
        out.append(("ENDPOINT", "STATUS", "CLUSTER"))
        items = [
            _typed(x, "endpoint_config")
            for x in data.get("static_endpoint_configs", []) + data.get("dynamic_endpoint_configs", [])
        ]
        for cla in sorted(items, key=lambda c: c.get("cluster_name", "")):
            for group in cla.get("endpoints", []):
                for lb in group.get("lb_endpoints", []):
                    sock = lb.get("endpoint", {}).get("address", {}).get("socket_address", {})
                    status = lb.get("health_status", "HEALTHY")
                    out.append(
                        (
                            f"{sock.get('address', '')}:{sock.get('port_value', '')}",
                            status,
                            cla.get("cluster_name", ""),
                        )
                    )
    else:
        out.append(("RESOURCE NAME", "TYPE", "STATUS"))
        for s in data.get("dynamic_active_secrets", []) + data.get("static_secrets", []):
            secret = _typed(s, "secret")
            kind = "CA" if "validation_context" in secret else "Cert Chain"
            out.append((s.get("name", ""), kind, "ACTIVE"))
    return out


def _match(match: dict) -> str:
    for key in ("prefix", "path", "path_separated_prefix"):
        if key in match:
            return f"{'/*' if key == 'prefix' and match[key] in ('', '/') else match[key] + ('*' if key == 'prefix' else '')}"
    if "safe_regex" in match:
        return f"~{match['safe_regex'].get('regex', '')}"
    return "-"


def render(table: list[tuple]) -> str:
    widths = [max(len(str(r[i])) for r in table) for i in range(len(table[0]))]
    return "\n".join(
        "     ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in table
    )


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if not args.proxy and not args.admin:
        parser.error("give a PROXY name or --admin URL")
    try:
        base = admin_url(args).rstrip("/")
        query = "?include_eds" if args.section == "endpoints" else ""
        response = httpx.get(f"{base}/config_dump{query}", timeout=10)
        response.raise_for_status()
        dump = response.json()
    except (httpx.HTTPError, LookupError, ValueError) as e:
        print(f"isthmus proxy-config: {e}", file=sys.stderr)
        return 1
    data = section_of(dump, args.section)
    print(json.dumps(data, indent=2) if args.output == "json" else render(rows(args.section, data)))
    return 0
