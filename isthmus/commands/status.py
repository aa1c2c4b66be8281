"""`isthmus status`: is the mesh from `isthmus up -d` running, and is each of its processes alive."""

from __future__ import annotations

import argparse
import sys

from isthmus.launcher import state


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "status",
        help="whether the mesh that `isthmus up -d` started is running, process by process",
        description="Read --state-dir's state.json and show every recorded process: its PID and whether it "
        "is alive. Exit status 0 when all are, 1 otherwise (or when nothing runs).",
    )
    p.add_argument("--state-dir", default=state.DEFAULT_STATE_DIR, metavar="DIR",
                   help=f"the --state-dir given to `isthmus up` (default {state.DEFAULT_STATE_DIR})")  # fmt: skip
    p.set_defaults(run=run, parser=p)


def render(st: state.UpState, alive) -> tuple[str, bool]:
    rows = [("isthmus up", st.supervisor_pid, alive(st.supervisor_pid))]
    rows += [(name, pid, alive(pid)) for name, pid in st.children.items()]
    width = max(len(r[0]) for r in rows)
    lines = [f"{'PROCESS':<{width}}  {'PID':>7}  STATE"]
    lines += [f"{name:<{width}}  {pid:>7}  {'running' if ok else 'GONE'}" for name, pid, ok in rows]
    everything = all(r[2] for r in rows)
    lines.append("")
    lines.append(f"gateway:   {st.gateway_url}")
    lines.append(f"dashboard: {st.dashboard_url}")
    lines.append(f"pilot:     {st.pilot_url}")
    if st.log_file:
        lines.append(f"logs:      {st.log_file}")
    return "\n".join(lines) + "\n", everything


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    try:
        st = state.read(args.state_dir)
    except ValueError as e:
        print(f"isthmus status: {e}", file=sys.stderr)
        return 1
    if st is None:
        print(f"not running (no {state.path(args.state_dir)})")
        return 1
    text, everything = render(st, state.alive)
    sys.stdout.write(text)
    return 0 if everything else 1
