"""`isthmus netns cleanup`: remove what a crashed transparent-mode run left behind.

Only names one of our runs makes are touched: `<prefix><6 hex digits>` and `<prefix><6 hex>-...`
(network namespaces, links in the host namespace, /etc/netns/ entries). Processes still inside such a
namespace are killed first, by PID, so the namespace really goes.
"""

from __future__ import annotations

import argparse
import os
import sys

from isthmus.launcher.netns import DEFAULT_PREFIX, NETNS_DIR, PlanError, check_prefix


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "netns",
        help="transparent mode's network namespaces (cleanup after a crash)",
        description="Manage the network namespaces, bridges and /etc/netns entries transparent mode creates.",
    )
    sub = p.add_subparsers(dest="netns_command", metavar="SUBCOMMAND", required=True)
    cleanup = sub.add_parser(
        "cleanup",
        help="delete leftover namespaces, links and /etc/netns dirs carrying our prefix",
        description="Delete network namespaces, links and /etc/netns/ directories named "
        "<prefix><6 hex digits>[-...] (what transparent mode creates), after killing the processes "
        "left inside those namespaces. Nothing else is touched. Needs root.",
    )
    cleanup.add_argument(
        "--prefix", default=DEFAULT_PREFIX, help=f"the run prefix to clean up (default {DEFAULT_PREFIX})"
    )
    cleanup.add_argument("--dry-run", action="store_true", help="only list what would be deleted")
    cleanup.set_defaults(run=run_cleanup, parser=cleanup)
    p.set_defaults(parser=p)


def run_cleanup(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from isthmus.launcher.netns_runner import list_leftovers, remove_leftovers

    try:
        check_prefix(args.prefix)
    except PlanError as e:
        parser.error(f"--prefix: {e}")
    if not args.dry_run and os.geteuid() != 0:
        print("isthmus netns cleanup: needs root (ip netns del)", file=sys.stderr)
        return 1
    try:
        found = list_leftovers(args.prefix, netns_dir=NETNS_DIR)
    except (OSError, FileNotFoundError) as e:
        print(f"isthmus netns cleanup: cannot list namespaces: {e}", file=sys.stderr)
        return 1
    total = sum(len(v) for v in found.values())
    if total == 0:
        print(f"nothing to clean up with prefix {args.prefix!r}")
        return 0
    verb = "would delete" if args.dry_run else "deleting"
    for kind, label in (("netns", "namespace"), ("links", "link"), ("netns_dirs", f"{NETNS_DIR}/")):
        for name in found[kind]:
            print(f"{verb} {label} {name}" if kind != "netns_dirs" else f"{verb} {label}{name}")
    if args.dry_run:
        return 0
    problems = remove_leftovers(found, netns_dir=NETNS_DIR)
    for problem in problems:
        print(f"isthmus netns cleanup: {problem}", file=sys.stderr)
    return 1 if problems else 0
