"""`isthmus logs`: the output of the running mesh's processes, like `kubectl logs`.

`isthmus up` (foreground or -d) has its supervisor write every process's output to
``<state dir>/logs/<workload>.log`` (one file per workload, across restarts) and all of it, prefixed
as on the terminal, to ``<state dir>/logs/mesh.log``. This command picks one of those files, prints
its end (--tail) and, with -f, follows it until the mesh stops.

Names are the workload names `isthmus status` lists: ``pilot``, ``citadel``, ``mixer``,
``reviews-v2`` (the app), ``reviews-v2-sidecar`` (its agent and proxy), ``istio-ingressgateway``.
As with Kubernetes, ``-c istio-proxy`` picks a workload's sidecar and ``-c app`` the app itself.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

from isthmus.launcher import state

MESH_LOG = "mesh.log"  # isthmus.launcher.supervisor.MESH_LOG (not imported: it pulls in httpx)
CONTAINERS = ("app", "istio-proxy")
SIDECAR_SUFFIX = "-sidecar"
CHUNK = 64 * 1024


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "logs",
        help="print the logs of the running mesh, or of one of its processes (like kubectl logs)",
        description="Print what the processes of the mesh started by `isthmus up` (foreground or -d) "
        "wrote: all of them, prefixed by workload, or only NAME (a workload as `isthmus status` lists "
        "it: pilot, citadel, mixer, productpage, reviews-v2, reviews-v2-sidecar, istio-ingressgateway, "
        "...). -c istio-proxy picks NAME's sidecar. Output survives restarts of a process; a new "
        "`isthmus up` starts the files afresh.",
    )
    p.add_argument("name", nargs="?", metavar="NAME", help="a workload; all of them when left out")
    p.add_argument("-c", "--container", choices=CONTAINERS,
                   help="with NAME: its app or its sidecar (istio-proxy), as in a Kubernetes pod")  # fmt: skip
    p.add_argument("-f", "--follow", action="store_true",
                   help="keep printing new lines until the mesh stops (or Ctrl-C)")  # fmt: skip
    p.add_argument("--tail", type=int, default=-1, metavar="N",
                   help="only the last N lines (default -1: all)")  # fmt: skip
    p.add_argument("--state-dir", default=state.DEFAULT_STATE_DIR, metavar="DIR",
                   help=f"the --state-dir given to `isthmus up` (default {state.DEFAULT_STATE_DIR})")  # fmt: skip
    p.set_defaults(run=run, parser=p)


# -- pure logic ---------------------------------------------------------------------------------------


class UnknownName(LookupError):
    pass


def resolve(name: str | None, container: str | None, known: Iterable[str]) -> str | None:
    """The workload whose log to show (None: all of them). UnknownName lists the known names."""
    known = sorted(set(known))
    if name is None:
        if container is not None:
            raise UnknownName(f"-c {container} needs a NAME (one of: {', '.join(known)})")
        return None
    candidate = name
    if container == "istio-proxy" and not name.endswith(SIDECAR_SUFFIX):
        candidate = name + SIDECAR_SUFFIX
    elif container == "app" and name.endswith(SIDECAR_SUFFIX):
        candidate = name[: -len(SIDECAR_SUFFIX)]
    if candidate in known:
        return candidate
    what = f"{name!r}" + (f" (-c {container}: {candidate!r})" if candidate != name else "")
    raise UnknownName(f"no process {what} in the mesh; known: {', '.join(known)}")


def last_lines(data: bytes, n: int) -> bytes:
    """The last n lines of data (all of it for n < 0, nothing for n == 0). A final line without a
    newline counts as a line."""
    if n < 0:
        return data
    if n == 0 or not data:
        return b""
    end = len(data) - 1 if data.endswith(b"\n") else len(data)
    pos = end
    for _ in range(n):
        pos = data.rfind(b"\n", 0, pos)
        if pos < 0:
            return data
    return data[pos + 1 :]


# -- files ----------------------------------------------------------------------------------------------


def log_file(logs: Path, workload: str | None) -> Path:
    return logs / (MESH_LOG if workload is None else f"{workload}.log")


def known_names(st: state.UpState, logs: Path) -> set[str]:
    names = set(st.children)
    if logs.is_dir():
        names.update(p.stem for p in logs.glob("*.log") if p.name != MESH_LOG)
    return names


def read_tail(f: BinaryIO, n: int) -> bytes:
    """The last n lines of an open file (all for n < 0), reading backwards only as far as needed.
    Leaves the file positioned at the end of what it returns."""
    f.seek(0, os.SEEK_END)
    size = f.tell()
    if n < 0:
        f.seek(0)
        return f.read()
    start = size
    data = b""
    while start > 0 and data.count(b"\n") <= n:
        start = max(0, start - CHUNK)
        f.seek(start)
        data = f.read(size - start)
    f.seek(size)
    return last_lines(data, n)


def follow(
    f: BinaryIO,
    write: Callable[[bytes], None],
    running: Callable[[], bool],
    sleep: Callable[[float], None] = time.sleep,
    interval: float = 0.2,
) -> None:
    """Write what is appended to f until running() is False and nothing more is there. A file that
    shrinks was started afresh (a new `isthmus up`): read it from its beginning."""
    while True:
        pos = f.tell()
        if os.fstat(f.fileno()).st_size < pos:
            f.seek(0)
        chunk = f.read(CHUNK)
        if chunk:
            write(chunk)
            continue
        if not running():
            chunk = f.read()
            if chunk:
                write(chunk)
            return
        sleep(interval)


# -- the command ----------------------------------------------------------------------------------------


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    def fail(message: str) -> int:
        print(f"isthmus logs: {message}", file=sys.stderr)
        return 1

    try:
        st = state.read(args.state_dir)
    except ValueError as e:
        return fail(str(e))
    if st is None or not state.alive(st.supervisor_pid):
        why = (
            f"no {state.path(args.state_dir)}"
            if st is None
            else f"isthmus up (PID {st.supervisor_pid}) recorded in {state.path(args.state_dir)} is gone"
        )
        return fail(
            f"no mesh is running from {args.state_dir} ({why}); start one with `isthmus up` "
            f"(or `isthmus up -d`), or pass the --state-dir it was given"
        )
    logs = state.logs_dir(args.state_dir)
    try:
        workload = resolve(args.name, args.container, known_names(st, logs))
    except UnknownName as e:
        return fail(str(e))
    path = log_file(logs, workload)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return fail(
            f"{path} does not exist: this mesh (PID {st.supervisor_pid}) keeps no per-process logs "
            f"(an older isthmus?)" + (f"; its output is in {st.log_file}" if st.log_file else "")
        )
    out = sys.stdout.buffer

    def write(data: bytes) -> None:
        out.write(data)
        out.flush()

    with f:
        try:
            write(read_tail(f, args.tail))
            if args.follow:
                follow(f, write, lambda: state.alive(st.supervisor_pid))
        except KeyboardInterrupt:
            return 130
        except BrokenPipeError:  # `isthmus logs | head`: quiet, and no second error at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
    return 0
