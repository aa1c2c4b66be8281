"""`isthmus token create`: print a bootstrap token (a JWT signed with citadel's token key)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from isthmus import flags


def register(commands) -> None:
    token = commands.add_parser(
        "token", help="bootstrap tokens for workloads to get certificates from citadel"
    )
    sub = token.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    create = sub.add_parser(
        "create",
        help="print a bootstrap token naming a namespace and service account",
        description="Print a JWT signed with citadel's token key (read from --root-dir). A workload "
        "presents it as 'authorization: Bearer <token>' to get its first certificate for "
        "spiffe://<trust-domain>/ns/<NS>/sa/<SA>.",
    )
    create.add_argument("--namespace", "-n", required=True, metavar="NS")
    create.add_argument("--service-account", required=True, metavar="SA")
    create.add_argument(
        "--ttl", type=flags.duration, default="1h", metavar="DURATION", help="token lifetime (default 1h)"
    )
    create.add_argument(
        "--root-dir",
        type=Path,
        default=Path(".isthmus/citadel"),
        metavar="DIR",
        help="citadel's --root-dir, holding its token key (default .isthmus/citadel)",
    )
    create.set_defaults(run=cmd_create, parser=create)


def cmd_create(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from citadel import storage
    from citadel.ca import spiffe, tokens

    try:
        spiffe.check_name("namespace", args.namespace)
        spiffe.check_name("service account", args.service_account)
    except ValueError as e:
        parser.error(str(e))
    try:
        key = storage.read_token_key(args.root_dir)
    except (ValueError, OSError) as e:
        print(f"isthmus token create: {e}", file=sys.stderr)
        return 1
    print(tokens.create(key, args.namespace, args.service_account, args.ttl))
    return 0
