"""Run every benchmark module, print one table, and write JSON to bench/results/<date>.json.

Usage: python -m bench [--quick] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import pkgutil
import sys
from pathlib import Path

import bench

RESULTS = Path(__file__).parent / "results"


def discover() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_"))


def print_table(rows: list[dict]) -> None:
    if not rows:
        return
    cols: list[str] = []
    for row in rows:
        cols.extend(k for k in row if k not in cols)
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for row in rows:
        print("  ".join(_fmt(row.get(c)).ljust(widths[c]) for c in cols))


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short runs (under 2 minutes in all)")
    parser.add_argument("--only", nargs="*", default=None, help="benchmark module names (e.g. bench_codec)")
    args = parser.parse_args(argv)
    names = args.only or discover()
    results = {}
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        print(
            f"== {name}: {(module.__doc__ or '').strip().splitlines()[0] if module.__doc__ else ''}",
            flush=True,
        )
        rows = module.run(quick=args.quick)
        print_table(rows)
        results[name] = rows
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{dt.datetime.now().strftime('%Y-%m-%dT%H-%M-%S')}.json"
    out.write_text(json.dumps({"quick": args.quick, "python": sys.version, "results": results}, indent=2))
    print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
