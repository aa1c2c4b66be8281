"""Apply a transparent-mode plan (`netns.py`) with `ip` and `iptables-restore`, run commands inside its
namespaces, and always take it all down again (I/O).

Teardown deletes everything the plan names, whether or not setup got that far, ignores what is already
gone, and is safe to call twice. It runs from `teardown()`, from `with`, at interpreter exit (atexit) and
on SIGTERM/SIGHUP (then the signal's previous behaviour goes on). Processes still inside our namespaces
are killed by PID first (they are ours: nothing else runs in them).
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from isthmus.launcher.netns import NETNS_DIR, PROXY_GID, PROXY_UID, Command, MeshPlan, leftovers

# Messages `ip` prints when what we delete does not exist (teardown treats them as success).
_MISSING = ("No such file or directory", "Cannot find device", "does not exist", "No such process")

Run = Callable[..., subprocess.CompletedProcess]


class NetnsError(RuntimeError):
    """A command failed; the message has the command and what it printed."""


def as_user(
    argv: Sequence[str], uid: int | None, gid: int | None = None, ambient_caps: Sequence[str] = ()
) -> list[str]:
    """`argv` run as `uid` (and `gid`, default the same number), with no supplementary groups, via
    util-linux setpriv: how the proxy runs as 1337 so that iptables' owner match excludes it.
    `ambient_caps` (e.g. ``dac_read_search``) are kept across the change of user and inherited by
    what it starts."""
    if uid is None:
        return list(argv)
    gid = uid if gid is None else gid
    caps = ",".join(f"+{c}" for c in ambient_caps)
    keep = [f"--inh-caps={caps}", f"--ambient-caps={caps}"] if caps else []
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *keep, "--", *argv]


def in_netns(
    netns: str,
    argv: Sequence[str],
    uid: int | None = None,
    gid: int | None = None,
    ambient_caps: Sequence[str] = (),
) -> list[str]:
    return ["ip", "netns", "exec", netns, *as_user(argv, uid, gid, ambient_caps)]


def run_command(cmd: Command, run: Run = subprocess.run) -> None:
    result = run(list(cmd.argv), input=cmd.stdin, capture_output=True, text=True, timeout=30)
    if result.returncode == 0:
        return
    err = (result.stderr or result.stdout or "").strip()
    if cmd.ignore_missing and any(m in err for m in _MISSING):
        return
    raise NetnsError(f"{' '.join(cmd.argv)!r} failed with exit {result.returncode}: {err}")


class NetnsMesh:
    """The namespaces, bridge, veths, hosts files and capture rules of one plan."""

    def __init__(self, plan: MeshPlan, run: Run = subprocess.run, netns_dir: str = NETNS_DIR) -> None:
        self.plan = plan
        self._run = run
        self._netns_dir = Path(netns_dir)
        self._lock = threading.Lock()
        self._applied = False
        self._torn_down = False
        self._previous_handlers: dict[int, object] = {}

    # -- setup ---------------------------------------------------------------------------------------
    def apply(self) -> NetnsMesh:
        """Create everything; on any failure remove what was made and raise NetnsError."""
        if self._applied:
            raise NetnsError("this mesh is already applied")
        self._applied = True
        self._register_cleanup()
        try:
            for path, text in self.plan.hosts_files().items():
                target = self._netns_dir / Path(path).relative_to(NETNS_DIR)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
                target.chmod(0o644)
            for cmd in self.plan.setup_commands():
                run_command(cmd, self._run)
        except BaseException:
            self.teardown()
            raise
        return self

    def __enter__(self) -> NetnsMesh:
        return self.apply()

    def __exit__(self, *exc) -> None:
        self.teardown()

    # -- inside the namespaces -----------------------------------------------------------------------
    def argv(self, workload: str, argv: Sequence[str], uid: int | None = None) -> list[str]:
        """The command line that runs `argv` in `workload`'s namespace (as `uid` if given)."""
        return in_netns(self.plan.get(workload).netns, argv, uid)

    def proxy_argv(self, workload: str, argv: Sequence[str]) -> list[str]:
        """`argv` in `workload`'s namespace as the proxy's UID/GID, which capture excludes."""
        c = self.plan.capture
        return in_netns(self.plan.get(workload).netns, argv, c.proxy_uid, c.proxy_gid)

    def exec(
        self, workload: str, argv: Sequence[str], uid: int | None = None, **kw
    ) -> subprocess.CompletedProcess:
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("timeout", 60)
        return subprocess.run(self.argv(workload, argv, uid), **kw)

    def popen(self, workload: str, argv: Sequence[str], uid: int | None = None, **kw) -> subprocess.Popen:
        return subprocess.Popen(self.argv(workload, argv, uid), **kw)

    # -- teardown ------------------------------------------------------------------------------------
    def teardown(self) -> list[str]:
        """Remove everything the plan names. Returns the problems met (empty when all went); never
        raises, so it can run from atexit and signal handlers. Calling it again does nothing."""
        with self._lock:
            if self._torn_down:
                return []
            self._torn_down = True
        problems: list[str] = []
        for ns in self.plan.netns_names():
            kill_netns_pids(ns, self._run)
        for cmd in self.plan.teardown_commands():
            try:
                run_command(cmd, self._run)
            except (NetnsError, OSError, subprocess.SubprocessError) as e:
                problems.append(str(e))
        for w in self.plan.workloads:
            shutil.rmtree(self._netns_dir / w.netns, ignore_errors=True)
            if (self._netns_dir / w.netns).exists():
                problems.append(f"could not remove {self._netns_dir / w.netns}")
        self._unregister_cleanup()
        return problems

    def _register_cleanup(self) -> None:
        atexit.register(self.teardown)
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread; atexit still covers us
        for sig in (signal.SIGTERM, signal.SIGHUP):
            previous = signal.getsignal(sig)
            self._previous_handlers[sig] = previous
            signal.signal(sig, self._on_signal)

    def _unregister_cleanup(self) -> None:
        atexit.unregister(self.teardown)
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, previous in self._previous_handlers.items():
            if signal.getsignal(sig) == self._on_signal:
                signal.signal(sig, previous)
        self._previous_handlers.clear()

    def _on_signal(self, signum, frame) -> None:
        previous = self._previous_handlers.get(signum, signal.SIG_DFL)
        self.teardown()  # restores the previous handler
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)


def kill_netns_pids(netns: str, run: Run = subprocess.run) -> list[int]:
    """SIGKILL every process inside `netns` (ours: we made the namespace), by PID."""
    try:
        result = run(["ip", "netns", "pids", netns], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    killed = []
    for word in (result.stdout or "").split():
        if not word.isdigit() or int(word) == os.getpid():
            continue
        try:
            os.kill(int(word), signal.SIGKILL)
            killed.append(int(word))
        except ProcessLookupError:
            pass
    return killed


# -- leftovers --------------------------------------------------------------------------------------


def list_leftovers(
    prefix: str, run: Run = subprocess.run, netns_dir: str = NETNS_DIR
) -> dict[str, list[str]]:
    """Namespaces, host links and /etc/netns dirs carrying our prefix (see netns.ours)."""
    ns = run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    names = [line.split()[0] for line in (ns.stdout or "").splitlines() if line.strip()]
    links = run(["ip", "-o", "link", "show"], capture_output=True, text=True, timeout=10)
    link_names = []
    for line in (links.stdout or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            link_names.append(parts[1].strip().split("@", 1)[0])
    root = Path(netns_dir)
    dirs = [p.name for p in root.iterdir()] if root.is_dir() else []
    return leftovers(prefix, names, link_names, dirs)


def remove_leftovers(
    found: dict[str, list[str]], run: Run = subprocess.run, netns_dir: str = NETNS_DIR
) -> list[str]:
    """Delete what `list_leftovers` found; returns the problems met."""
    problems = []
    for ns in found["netns"]:
        kill_netns_pids(ns, run)
    commands = [Command(("ip", "netns", "del", ns), ignore_missing=True) for ns in found["netns"]]
    commands += [Command(("ip", "link", "del", link), ignore_missing=True) for link in found["links"]]
    for cmd in commands:
        try:
            run_command(cmd, run)
        except (NetnsError, OSError, subprocess.SubprocessError) as e:
            problems.append(str(e))
    for name in found["netns_dirs"]:
        path = Path(netns_dir) / name
        shutil.rmtree(path, ignore_errors=True)
        if path.exists():
            problems.append(f"could not remove {path}")
    return problems


__all__ = [
    "PROXY_GID",
    "PROXY_UID",
    "NetnsError",
    "NetnsMesh",
    "as_user",
    "in_netns",
    "kill_netns_pids",
    "list_leftovers",
    "remove_leftovers",
]
