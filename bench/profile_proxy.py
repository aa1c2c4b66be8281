"""Profile the Isthmus proxy's request path under wrk load with cProfile.

Usage: python -m bench.profile_proxy [--seconds 5] [--out /tmp/proxy.prof] [--top 40]

The proxy runs under cProfile with a CPU-time clock (bench._cpu_profile) behind the same bootstrap as ``bench_proxy``; wrk drives it
(32 keep-alive connections, 1 KB answers from nginx); the proxy is stopped with /quitquitquit so the
profile is written, then the top functions by own time are printed.
"""

from __future__ import annotations

import argparse
import pstats
import sys
import urllib.request

from bench.common import isthmus_proxy, nginx_upstream, wrk


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_proxy", description=__doc__)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--out", default="/tmp/isthmus-proxy.prof")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--sort", default="tottime")
    args = parser.parse_args(argv)
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
