"""`isthmus down`: stop a mesh started with `isthmus up -d`, by the PIDs in its state file.

It sends SIGTERM to the `isthmus up` process, which stops everything in order (gateway, apps,
sidecars drained, control plane) and removes the state file. Only if that supervisor is gone or does
not finish in time are the recorded children killed, each by its own PID (process group). No other
process is ever signalled.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from isthmus.launcher import state


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "down",
        help="stop the mesh that `isthmus up -d` started",
        description="Stop the mesh recorded in --state-dir's state.json: SIGTERM to `isthmus up`, which "
        "stops everything in order; the recorded PIDs are killed only if it does not finish in --timeout.",
    )
    p.add_argument("--state-dir", default=state.DEFAULT_STATE_DIR, metavar="DIR",
                   help=f"the --state-dir given to `isthmus up` (default {state.DEFAULT_STATE_DIR})")  # fmt: skip
    p.add_argument("--timeout", type=float, default=90.0, metavar="SECONDS",
                   help="how long the ordered stop may take before the remaining PIDs are killed (default 90)")  # fmt: skip
    p.set_defaults(run=run, parser=p)


def _wait_gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(state.alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    try:
        st = state.read(args.state_dir)
    except ValueError as e:
        print(f"isthmus down: {e}", file=sys.stderr)
        return 1
    if st is None:
        print(f"isthmus down: nothing runs from {args.state_dir} (no {state.FILE})", file=sys.stderr)
        return 1
    if state.alive(st.supervisor_pid):
        os.kill(st.supervisor_pid, signal.SIGTERM)
        print(f"stopping the mesh (isthmus up, PID {st.supervisor_pid}) ...", flush=True)
        if _wait_gone([st.supervisor_pid], args.timeout):
            left = [p for p in st.children.values() if state.alive(p)]
            if not left:
                state.path(args.state_dir).unlink(missing_ok=True)
                print("stopped")
                return 0
    killed = []
    for name, pid in st.children.items():
        if state.alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)  # each child leads its own process group
            except (ProcessLookupError, PermissionError):
                continue
            killed.append(f"{name} ({pid})")
    if state.alive(st.supervisor_pid):
        os.kill(st.supervisor_pid, signal.SIGKILL)
        killed.append(f"isthmus up ({st.supervisor_pid})")
    state.path(args.state_dir).unlink(missing_ok=True)
    print("stopped" + (f"; killed what did not stop in time: {', '.join(killed)}" if killed else ""))
    return 0
