"""Profile the Isthmus proxy's request path under wrk load.

Usage::

    python -m bench.profile_proxy [--seconds 5] [--out /tmp/proxy.prof] [--top 40]
    python -m bench.profile_proxy --py-spy /path/to/py-spy --out docs/flamegraphs/x.svg [--seconds 10]

Default: the proxy runs under cProfile with a CPU-time clock (bench._cpu_profile) behind the same
bootstrap as ``bench_proxy``; wrk drives it (32 keep-alive connections, 1 KB answers from nginx); the
proxy is stopped with /quitquitquit so the profile is written, then the top functions by own time
are printed. cProfile counts calls exactly but inflates call-heavy code.

``--py-spy``: a sampling profiler (py-spy, not a project dependency: install it in a tool venv of its
own) records the unmodified proxy for ``--seconds`` while wrk runs, and writes a flame graph (SVG,
or ``--format raw`` collapsed stacks). On a loaded machine a sample also lands where the process was
preempted, so read lines with few samples with care.
"""

from __future__ import annotations

import argparse
import pstats
import subprocess
import sys
import threading
import urllib.request

from bench.common import isthmus_proxy, nginx_upstream, wrk


def _py_spy(args) -> int:
    with nginx_upstream() as upstream, isthmus_proxy(upstream) as (port, proc):
        wrk(f"http://127.0.0.1:{port}/", 1)  # warm up: connections made, caches filled
        result: dict = {}
        load = threading.Thread(
            target=lambda: result.update(wrk(f"http://127.0.0.1:{port}/", args.seconds + 3))
        )
        load.start()
        try:
            cmd = [args.py_spy, "record", "-r", "250", "-d", str(args.seconds), "-f", args.format]
            rc = subprocess.run([*cmd, "-o", args.out, "--pid", str(proc.pid)], check=False).returncode
        finally:
            load.join()
    print(f"wrk while sampling: {result.get('rps', 0):.0f} req/s; flame graph: {args.out}")
    return rc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_proxy", description=__doc__)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--out", default="/tmp/isthmus-proxy.prof")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--py-spy", dest="py_spy", default=None, help="path of a py-spy binary")
    parser.add_argument("--format", default="flamegraph", choices=("flamegraph", "raw", "speedscope"))
    args = parser.parse_args(argv)
    if args.py_spy:
        return _py_spy(args)
    with nginx_upstream() as upstream:
        prefix = ["-m", "bench._cpu_profile", args.out]
        with isthmus_proxy(upstream, interpreter_args=prefix) as (port, proc):
            result = wrk(f"http://127.0.0.1:{port}/", args.seconds)
            admin = proc.isthmus_admin_port
            urllib.request.urlopen(
                urllib.request.Request(f"http://127.0.0.1:{admin}/quitquitquit", method="POST")
            )
            proc.wait(30)
    print(f"wrk under cProfile: {result['rps']:.0f} req/s")
    pstats.Stats(args.out).sort_stats(args.sort).print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
