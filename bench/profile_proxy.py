"""Profile the Isthmus proxy's request path under wrk load.

Usage::

    python -m bench.profile_proxy [--seconds 5] [--out /tmp/proxy.prof] [--top 40]
    python -m bench.profile_proxy --py-spy /path/to/py-spy --out docs/flamegraphs/x.svg [--seconds 10]
    python -m bench.profile_proxy --instructions 1000 [--tree /tmp/old-checkout]

Default: the proxy runs under cProfile with a CPU-time clock (bench._cpu_profile) behind the same
bootstrap as ``bench_proxy``; wrk drives it (32 keep-alive connections, 1 KB answers from nginx); the
proxy is stopped with /quitquitquit so the profile is written, then the top functions by own time
are printed. cProfile counts calls exactly but inflates call-heavy code.

``--instructions N``: the proxy runs under valgrind's callgrind and N requests are sent one at a time
over 4 keep-alive connections (after 200 to warm up); prints the instructions the proxy executed per
request. Deterministic (to ~0.1 %; syscalls' kernel time is not counted), so two trees compare on a
busy machine where CPU-time A/B runs spread over +-15 %: ``--tree`` runs the proxy of another checkout
(e.g. ``git archive <commit> | tar -x -C /tmp/old``) with this bench code. About a minute per 1000
requests.

``--calls N``: cProfile over N sequential requests sent after the warm-up (profiling starts on a
signal): calls per request of each function, and their CPU time per request (inflated by cProfile).

``--features mx,ext_authz,als`` (with ``--instructions`` or ``--calls``; ``ratelimit`` too, or empty for
none): bench_mixer's inbound sidecar with these mixer features, a real mixer, and the caller's
metadata-exchange headers on every request; compare with ``--features ""`` to see what they cost.

``--py-spy``: a sampling profiler (py-spy, not a project dependency: install it in a tool venv of its
own) records the unmodified proxy for ``--seconds`` while wrk runs, and writes a flame graph (SVG,
or ``--format raw`` collapsed stacks). On a loaded machine a sample also lands where the process was
preempted, so read lines with few samples with care.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import pstats
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import yaml

from bench.common import (
    REPO,
    _cluster,
    _hcm,
    _listener,
    _socket_address,
    isthmus_proxy,
    nginx_upstream,
    process,
    wrk,
)
from tests.support.net import free_port, wait_for_http, wait_for_port


def _sequential_requests(port: int, n: int, connections: int = 4, headers: dict | None = None) -> None:
    """n GETs, one at a time, round-robin over keep-alive connections; each answer read whole."""
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(connections)]
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%s\r\n" % (port, extra.encode())
    try:
        for i in range(n):
            s = socks[i % connections]
            s.sendall(request)
            buf = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    raise RuntimeError("the proxy closed a connection")
                buf += chunk
                end = buf.find(b"\r\n\r\n")
                if end >= 0:
                    m = re.search(rb"\r\ncontent-length: *(\d+)", buf[:end].lower())
                    if m and len(buf) >= end + 4 + int(m.group(1)):
                        break
    finally:
        for s in socks:
            s.close()


def _callgrind_dump(pid: int, out_dir: str, admin_port: int, keep: str | None = None) -> int:
    """Dump callgrind's counters now (they restart from zero); the instructions since the last dump.

    Callgrind acts on the request only while the process runs, and an idle proxy sleeps in epoll:
    a TCP connection opened and closed on the admin port wakes it (a few thousand instructions)."""
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", admin_port), timeout=5).close()
        files = glob.glob(f"{out_dir}/callgrind.out.*.*")  # callgrind.out.<pid>.<dump number>
        if files:
            total = 0
            with open(files[0]) as f:
                for line in f:
                    if line.startswith(("summary:", "totals:")):
                        total = int(line.split()[1])
            if total:
                for f in files:
                    if keep:
                        shutil.copy(f, keep)
                    os.remove(f)
                return total
        time.sleep(0.5)
    raise RuntimeError("callgrind wrote no dump")


@contextlib.contextmanager
def _mixer(d: str):
    """A real mixer (bench_mixer's policy and quota config): its gRPC port."""
    from bench.bench_mixer import CONFIG

    grpc_port, http_port = free_port(), free_port()
    with open(os.path.join(d, "mixer.yaml"), "w") as f:
        f.write(CONFIG)
    args = [sys.executable, "-m", "mixer", "--config", os.path.join(d, "mixer.yaml"), "--log-level",
            "warning", "--grpc-addr", f"127.0.0.1:{grpc_port}", "--http-addr", f"127.0.0.1:{http_port}"]  # fmt: skip
    with process(args, cwd=REPO) as proc:
        wait_for_http(f"http://127.0.0.1:{http_port}/ready", proc=proc)
        wait_for_port("127.0.0.1", grpc_port, proc=proc)
        yield grpc_port


@contextlib.contextmanager
def _sequential_target(args, prefix: list[str], tree):
    """The proxy under ``prefix`` (a profiler's command line), behind bench_proxy's bootstrap or, with
    ``--features``, bench_mixer's inbound sidecar and a real mixer; warmed up by 200 requests.
    Yields (proc, send) where ``send(n)`` makes n sequential requests with the caller's headers."""
    features = frozenset(f for f in (args.features or "").split(",") if f)
    headers = None
    with contextlib.ExitStack() as stack:
        upstream = stack.enter_context(nginx_upstream())
        d = stack.enter_context(tempfile.TemporaryDirectory(prefix="isthmus-profile-"))
        admin, listen = free_port(), free_port()
        if args.features is None:
            hcm = _hcm("bench", "upstream", os.path.join(d, "access.log"))
            bootstrap = {
                "admin": {"address": _socket_address(admin)},
                "static_resources": {
                    "listeners": [_listener("bench", listen, hcm)],
                    "clusters": [_cluster("upstream", upstream)],
                },
            }
        else:  # bench_mixer's inbound sidecar with these mixer features, the caller's peer headers
            from bench.bench_mixer import FEATURES, PEER_HEADERS, _sidecar_bootstrap

            if features - FEATURES:
                raise SystemExit(
                    f"--features: unknown {sorted(features - FEATURES)}; known {sorted(FEATURES)}"
                )
            mixer_port = stack.enter_context(_mixer(d)) if features else 0
            bootstrap = _sidecar_bootstrap(listen, admin, upstream, mixer_port, features)
            headers = PEER_HEADERS
        with open(os.path.join(d, "bootstrap.yaml"), "w") as f:
            yaml.safe_dump(bootstrap, f)
        cmd = [*prefix, sys.executable]
        if prefix and prefix[0] != "valgrind":
            cmd = [sys.executable, *prefix]
        cmd += ["-m", "proxy", "-c", os.path.join(d, "bootstrap.yaml"), "-l", "warning"]
        proc = stack.enter_context(process(cmd, cwd=tree))
        wait_for_http(f"http://127.0.0.1:{admin}/ready", timeout=600, proc=proc)
        wait_for_port("127.0.0.1", listen, timeout=60, proc=proc)
        proc.isthmus_admin_port = admin
        proc.isthmus_label = (
            f" features={','.join(sorted(features)) or 'none'}" if args.features is not None else ""
        )
        _sequential_requests(listen, 200, headers=headers)  # warm up: connections made, caches filled
        yield proc, lambda n: _sequential_requests(listen, n, headers=headers)


def _instructions(args) -> int:
    if shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind's callgrind: apt-get install valgrind")
    tree = os.path.abspath(args.tree) if args.tree else REPO
    with tempfile.TemporaryDirectory(prefix="isthmus-callgrind-") as cg_dir:
        prefix = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={cg_dir}/callgrind.out.%p"]
        with _sequential_target(args, prefix, tree) as (proc, send):
            _callgrind_dump(proc.pid, cg_dir, proc.isthmus_admin_port)
            send(args.instructions)
            total = _callgrind_dump(proc.pid, cg_dir, proc.isthmus_admin_port, keep=args.keep)
    per_request = total / args.instructions
    print(
        f"{tree}{proc.isthmus_label}: {per_request:.0f} instructions per request ({args.instructions} requests)"
    )
    return 0


def _calls(args) -> int:
    """cProfile (exact call counts) over N sequential requests after the warm-up: per request, the
    calls of each function and the total."""
    tree = os.path.abspath(args.tree) if args.tree else REPO
    with tempfile.TemporaryDirectory(prefix="isthmus-calls-") as d:
        out = os.path.join(d, "proxy.prof")
        with _sequential_target(args, ["-m", "bench._cpu_profile", out, "--wait-for-signal"], tree) as (
            proc,
            send,
        ):
            os.kill(proc.pid, signal.SIGUSR1)  # profiling starts now, after the warm-up
            send(args.calls)
            urllib.request.urlopen(
                urllib.request.Request(
                    f"http://127.0.0.1:{proc.isthmus_admin_port}/quitquitquit", method="POST"
                )
            )
            proc.wait(60)
        stats = pstats.Stats(out)
    rows = []
    total = 0
    for (filename, line, name), (_, ncalls, tottime, _cum, _) in stats.stats.items():
        total += ncalls
        rows.append(
            (
                ncalls / args.calls,
                tottime,
                f"{os.path.relpath(filename, tree) if filename.startswith('/') else filename}:{line}({name})",
            )
        )
    print(
        f"{tree}{proc.isthmus_label}: {total / args.calls:.1f} Python-visible calls per request ({args.calls} requests)"
    )
    for per, tottime, where in sorted(rows, reverse=True)[: args.top]:
        print(f"{per:8.2f} {tottime * 1e6 / args.calls:8.1f}us  {where}")
    return 0


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
    parser.add_argument("--instructions", type=int, default=0, metavar="N", help="callgrind, N requests")
    parser.add_argument("--calls", type=int, default=0, metavar="N", help="cProfile call counts, N requests")
    parser.add_argument("--tree", default=None, help="with --instructions: run the proxy of this checkout")
    parser.add_argument(
        "--features",
        default=None,
        help="with --instructions: bench_mixer's inbound sidecar with these mixer features, comma-separated "
        "(mx, ext_authz, als, ratelimit; empty: none) and a real mixer",
    )
    parser.add_argument("--keep", default=None, help="with --instructions: copy the callgrind dump here")
    args = parser.parse_args(argv)
    if args.instructions:
        return _instructions(args)
    if args.calls:
        return _calls(args)
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
