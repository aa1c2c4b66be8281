"""`isthmus up` for the whole mesh: the files it needs before starting (pilot's config dir, bootstrap
tokens), the state file, and running in the background (-d). The topology itself is topology.mesh
(transparent.topology with --transparent, whose namespaces netns_runner creates and removes)."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from isthmus.launcher import state, transparent
from isthmus.launcher.netns import MeshPlan
from isthmus.launcher.topology import (
    MeshOptions,
    Topology,
    Workload,
    local_addressing,
    mesh,
    mesh_services_yaml,
)

DATA = Path(__file__).parent / "data"
BASE_CONFIG = ("bookinfo-gateway.yaml", "destination-rule-all.yaml")
TOKEN_TTL_S = 24 * 3600


def shared_samples() -> Path:
    """../shared/istio-samples/bookinfo/networking next to the repository (REPO.parent / "shared")."""
    return Path(__file__).resolve().parents[3] / "shared" / "istio-samples" / "bookinfo" / "networking"


def options_from_args(args: argparse.Namespace) -> MeshOptions:
    from isthmus import flags

    try:
        flags.duration(args.drain)
    except Exception as e:  # argparse type errors are ValueError/ArgumentTypeError
        raise ValueError(f"--drain: {e}") from None
    if args.redis and not args.redis.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"--redis {args.redis!r}: expected redis://HOST:PORT[/DB]")
    return MeshOptions(
        state_dir=str(Path(args.state_dir).absolute()),
        address_base=args.address_base,
        control_address=args.control_address,
        port=args.port,
        redis_url=args.redis,
        drain=args.drain,
    )


TRANSPARENT_TOOLS = ("ip", "iptables-restore", "setpriv")


def transparent_refusal(euid: int | None = None, which: Callable[[str], str | None] = shutil.which) -> str:
    """Why `isthmus up --transparent` cannot run here ("" when it can)."""
    if (os.geteuid() if euid is None else euid) != 0:
        return (
            "--transparent needs root (it creates network namespaces, a bridge and iptables rules); "
            "run it as root, or use `isthmus up` without --transparent (local mode needs no root)"
        )
    missing = [tool for tool in TRANSPARENT_TOOLS if which(tool) is None]
    if missing:
        return f"--transparent needs {', '.join(missing)} on PATH (iproute2, iptables, util-linux)"
    return ""


def prepare(options: MeshOptions, net: MeshPlan | None = None) -> Topology:
    """Validate, then write pilot's config dir afresh (and empty its store of applied config): Istio's bookinfo-gateway.yaml and
    destination-rule-all.yaml (from ../shared when present, else the copies in data/) and the
    generated ServiceEntries/WorkloadEntries (with `net`, transparent mode: the pod IPs, and each
    proxy's directory belongs to the proxy's user). Refuses when a mesh already runs from this state dir."""
    # raises ValueError on bad addresses before anything is written
    topology = transparent.topology(options, net) if net else mesh(options)
    try:
        running = state.read(options.state_dir)
    except ValueError:
        running = None
    if running is not None and state.alive(running.supervisor_pid):
        raise ValueError(
            f"a mesh already runs from {options.state_dir} (isthmus up, PID {running.supervisor_pid}); "
            f"stop it with `isthmus down --state-dir {options.state_dir}` or use another --state-dir"
        )
    config = Path(options.config_dir)
    if config.exists():
        shutil.rmtree(config)
    config.mkdir(parents=True)
    # Config applied with `isthmus apply` survives pilot's restarts within one run (pilot's
    # --config-store), but every `isthmus up` starts from the base config, like the config dir above.
    shutil.rmtree(options.config_store, ignore_errors=True)
    samples = shared_samples()
    for name in BASE_CONFIG:
        source = samples / name if (samples / name).is_file() else DATA / name
        shutil.copyfile(source, config / name)
    if net is None:
        services = mesh_services_yaml(local_addressing(options.address_base), options.port)
    else:
        services = transparent.services_yaml(options, net)
    (config / "bookinfo-services.yaml").write_text(services)
    for w in topology.workloads:
        if w.token:
            proxy_dir = Path(w.token[2]).parent
            proxy_dir.mkdir(parents=True, exist_ok=True)
            if net is not None and w.wrap and "setpriv" in w.wrap:  # the agent runs as the proxy's user
                os.chown(proxy_dir, net.capture.proxy_uid, net.capture.proxy_gid)
    return topology


def token_writer(options: MeshOptions) -> Callable[[Workload], None]:
    """Before an agent starts: its bootstrap token, signed with citadel's token key (citadel is ready)."""

    def write(w: Workload) -> None:
        if not w.token:
            return
        from citadel import storage
        from citadel.ca import tokens

        namespace, sa, file = w.token
        key = storage.read_token_key(Path(options.citadel_root))
        Path(file).write_text(tokens.create(key, namespace, sa, TOKEN_TTL_S) + "\n")
        os.chmod(file, 0o600)

    return write


def state_recorder(
    options: MeshOptions, log_file: str = "", net: MeshPlan | None = None
) -> Callable[[dict[str, int]], None]:
    """With `net` (transparent mode) the state file names the run's namespaces, for `isthmus down`."""

    def record(pids: dict[str, int]) -> None:
        state.write(
            options.state_dir,
            state.UpState(
                supervisor_pid=os.getpid(),
                children=pids,
                gateway_url=options.gateway_url,
                dashboard_url=options.dashboard_url,
                pilot_url=options.pilot_url,
                log_file=log_file or os.environ.get("ISTHMUS_UP_LOG", ""),
                netns_prefix=net.prefix if net else "",
                netns_run_id=net.run_id if net else "",
            ),
        )

    return record


def forget(options: MeshOptions) -> None:
    state.remove(options.state_dir, os.getpid())


def foreground_argv(args: argparse.Namespace) -> list[str]:
    """The same `isthmus up` without -d."""
    argv = [
        "up",
        "--address-base", args.address_base,
        "--port", str(args.port),
        "--control-address", args.control_address,
        "--state-dir", str(Path(args.state_dir).absolute()),
        "--ready-timeout", str(args.ready_timeout),
        "--drain", args.drain,
        "--color", "never",
    ]  # fmt: skip
    if args.redis:
        argv += ["--redis", args.redis]
    if getattr(args, "transparent", False):
        argv.append("--transparent")
    if args.log_level:
        argv += ["--log-level", args.log_level]
    return argv


def detach(options: MeshOptions, args: argparse.Namespace, out=sys.stdout) -> int:
    """Run `isthmus up` in its own session with its output in <state dir>/up.log; return once it is
    ready (0) or has failed (1, with the end of its log)."""
    log_path = Path(options.state_dir) / "up.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "ISTHMUS_UP_LOG": str(log_path)}
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "isthmus", *foreground_argv(args)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    deadline = time.monotonic() + args.ready_timeout * 4
    while True:
        try:
            current = state.read(options.state_dir)
        except ValueError:
            current = None
        if current is not None and current.supervisor_pid == proc.pid:
            out.write(
                f"The mesh is up in the background (isthmus up, PID {proc.pid}).\n"
                f"  gateway:   {current.gateway_url}\n"
                f"  dashboard: {current.dashboard_url}\n"
                f"  logs:      {log_path}\n"
                f"  status:    isthmus status --state-dir {options.state_dir}\n"
                f"  stop:      isthmus down --state-dir {options.state_dir}\n"
            )
            out.flush()
            return 0
        code = proc.poll()
        if code is not None or time.monotonic() > deadline:
            if code is None:
                proc.terminate()
                proc.wait()
            tail = log_path.read_text(errors="replace").splitlines()[-30:]
            print("\n".join(tail), file=sys.stderr)
            print(f"isthmus up -d: the mesh did not come up (log: {log_path})", file=sys.stderr)
            return 1
        time.sleep(0.2)
