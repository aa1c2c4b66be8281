"""`isthmus proxy-status [PROXY]`: who is in sync with pilot, in istioctl's table, from pilot's
``/debug/syncz``. A NACK is shown as NACKED in its column, and its error is printed below the table."""

from __future__ import annotations

import argparse
import json
import sys

import httpx

DEFAULT_PILOT = "http://127.0.0.1:15014"
COLUMNS = ("NAME", "CLUSTER", "CDS", "LDS", "EDS", "RDS", "ISTIOD", "VERSION")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "proxy-status",
        help="sync status of every proxy connected to pilot (like istioctl proxy-status)",
        description="Show, for every proxy connected to pilot, whether its last CDS, LDS, EDS and RDS "
        "responses are SYNCED, STALE (sent, not yet answered), NOT SENT or NACKED (rejected; the "
        "error is printed below the table).",
    )
    p.add_argument("proxy", nargs="?", help="only this proxy (NAME as shown, or its node id)")
    p.add_argument(
        "--pilot", default=DEFAULT_PILOT, metavar="URL", help=f"pilot's HTTP address ({DEFAULT_PILOT})"
    )
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    p.set_defaults(run=run, parser=p)


def fetch_syncz(pilot: str) -> list[dict]:
    response = httpx.get(pilot.rstrip("/") + "/debug/syncz", timeout=10)
    response.raise_for_status()
    return response.json()


def select(entries: list[dict], proxy: str | None) -> list[dict]:
    if not proxy:
        return entries
    return [e for e in entries if proxy in (e.get("name"), e.get("proxy"))]


def render(entries: list[dict]) -> str:
    """istioctl's layout: left-aligned columns, then one line per NACK with its error."""
    rows = [COLUMNS] + [
        (
            e["name"],
            e.get("cluster_id", ""),
            e.get("cds", ""),
            e.get("lds", ""),
            e.get("eds", ""),
            e.get("rds", ""),
            e.get("istiod", ""),
            e.get("istio_version", "") or "-",
        )
        for e in entries
    ]
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(COLUMNS))]
    lines = ["     ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    nacks = [
        f"{e['name']}: {short} NACKED version {state.get('nack_version', '')}: {state.get('error', '')}"
        for e in entries
        for short, state in sorted(e.get("types", {}).items())
        if state.get("status") == "NACKED"
    ]
    if nacks:
        lines += ["", "Rejected by the proxy (NACK):", *(f"  {n}" for n in nacks)]
    return "\n".join(lines)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    try:
        entries = select(fetch_syncz(args.pilot), args.proxy)
    except httpx.HTTPError as e:
        print(f"isthmus proxy-status: cannot read {args.pilot}/debug/syncz: {e}", file=sys.stderr)
        return 1
    if args.proxy and not entries:
        print(f"isthmus proxy-status: proxy {args.proxy!r} is not connected to pilot", file=sys.stderr)
        return 1
    print(json.dumps(entries, indent=2) if args.output == "json" else render(entries))
    return 0
