"""`isthmus down`: stop a mesh started with `isthmus up -d`, by the PIDs in its state file.

It sends SIGTERM to the `isthmus up` process, which stops everything in order (gateway, apps,
sidecars drained, control plane) and removes the state file. Only if that supervisor is gone or does
not finish in time are the recorded children killed, each by its own PID (process group). No other
process is ever signalled.

A transparent run (``isthmus up --transparent``) records its namespace prefix and run id; once the
processes are gone, whatever of that run is left (namespaces with their veths and bridge, /etc/netns
entries) is removed, as `isthmus netns cleanup` would, but only that run's: when `isthmus up` was
SIGKILLed it could not remove them itself.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
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


def remove_run_netns(st: state.UpState) -> list[str]:
    """Remove what is left of the run's namespaces; the problems met (empty when all went)."""
    if not st.netns_run_id:
        return []
    from isthmus.launcher.netns import NETNS_DIR, PlanError, of_run
    from isthmus.launcher.netns_runner import list_leftovers, remove_leftovers

    try:
        of_run({}, st.netns_prefix, st.netns_run_id)  # a damaged state file names nothing to remove
    except PlanError as e:
        return [f"the state file's namespaces: {e}"]
    try:
        found = of_run(list_leftovers(st.netns_prefix, netns_dir=NETNS_DIR), st.netns_prefix, st.netns_run_id)
    except (OSError, subprocess.SubprocessError) as e:
        return [f"cannot list namespaces: {e}"]
    if not any(found.values()):
        return []
    if os.geteuid() != 0:
        names = ", ".join(n for names in found.values() for n in names)
        return [f"needs root to remove the run's namespaces ({names}): run `isthmus down` as root"]
    for kind, label in (("netns", "namespace "), ("links", "link "), ("netns_dirs", f"{NETNS_DIR}/")):
        for name in found[kind]:
            print(f"removing {label}{name}", flush=True)
    return remove_leftovers(found, netns_dir=NETNS_DIR)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    try:
        st = state.read(args.state_dir)
    except ValueError as e:
        print(f"isthmus down: {e}", file=sys.stderr)
        return 1
    if st is None:
        print(f"isthmus down: nothing runs from {args.state_dir} (no {state.FILE})", file=sys.stderr)
        return 1
    _stop(args, st)
    problems = remove_run_netns(st)
    for problem in problems:
        print(f"isthmus down: {problem}", file=sys.stderr)
    if problems:  # kept, so a second `isthmus down` (as root) finds the run again
        print(
            f"isthmus down: {state.path(args.state_dir)} kept until the run is fully removed", file=sys.stderr
        )
        return 1
    state.path(args.state_dir).unlink(missing_ok=True)
    return 0


def _stop(args: argparse.Namespace, st: state.UpState) -> None:
    """SIGTERM to `isthmus up`; the recorded PIDs SIGKILLed if it is gone or too slow. Returns once
    they are gone (or did not go within a few seconds of SIGKILL)."""
    if state.alive(st.supervisor_pid):
        os.kill(st.supervisor_pid, signal.SIGTERM)
        print(f"stopping the mesh (isthmus up, PID {st.supervisor_pid}) ...", flush=True)
        if _wait_gone([st.supervisor_pid], args.timeout):
            left = [p for p in st.children.values() if state.alive(p)]
            if not left:
                print("stopped")
                return
    killed, pids = [], []
    for name, pid in st.children.items():
        if state.alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)  # each child leads its own process group
            except (ProcessLookupError, PermissionError):
                continue
            killed.append(f"{name} ({pid})")
            pids.append(pid)
    if state.alive(st.supervisor_pid):
        os.kill(st.supervisor_pid, signal.SIGKILL)
        killed.append(f"isthmus up ({st.supervisor_pid})")
        pids.append(st.supervisor_pid)
    _wait_gone(pids, 10.0)
    print("stopped" + (f"; killed what did not stop in time: {', '.join(killed)}" if killed else ""))
