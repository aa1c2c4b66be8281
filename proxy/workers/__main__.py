"""`python -m proxy.workers --fd N --parent-pid P --index I`: one worker (started by the main proxy)."""

from __future__ import annotations

import argparse
import sys

from isthmus.log import LEVEL_NAMES


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m proxy.workers", description="an Isthmus proxy worker")
    p.add_argument("--fd", type=int, required=True, help="the Unix socket to the main process")
    p.add_argument("--parent-pid", type=int, required=True, help="the main process (the worker dies with it)")
    p.add_argument("--index", type=int, default=0, help="worker number")
    p.add_argument("-l", "--log-level", default="info", choices=LEVEL_NAMES)
    ns = p.parse_args(argv)
    from proxy.workers.worker import main as run

    return run(ns.fd, ns.parent_pid, ns.index, ns.log_level)


if __name__ == "__main__":
    sys.exit(main())
