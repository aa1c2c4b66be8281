"""Where the agent serves SDS, given that a Unix socket path holds at most 107 bytes.

Linux's ``sockaddr_un.sun_path`` is 108 bytes including the terminating NUL, so gRPC refuses to bind
(and to connect to) ``unix:<path>`` when the path is longer than 107 bytes. The natural socket,
``<state dir>/proxies/<name>/SDS``, passes that limit for a clone at a deep path or a long
``--state-dir``. The agent writes the proxy's bootstrap itself, so it can serve the socket elsewhere and
name that place in the bootstrap's ``sds-grpc`` pipe address. In order of preference:

1. ``natural``: the requested path, absolute, when it fits;
2. ``relative``: the same socket named relative to the working directory, when that fits. The proxy is
   the agent's child and shares its working directory (Istio's own default, ``./etc/istio/proxy/SDS``,
   is relative too);
3. ``private``: ``<base>/isthmus-sds-XXXXXXXX/SDS`` in a new directory created 0700 under
   ``$XDG_RUNTIME_DIR`` (when it is ours) or ``/tmp``; a symlink at the requested path points at the
   socket (so ``ls`` shows where it went) and both are removed when the agent stops. A symlink left by
   an agent that was SIGKILLed leads the next agent to its stale directory, which it removes.

When none fits, `SocketPathError` names the path and the limit.

`choose` is pure; `prepare` and `release` do the file-system work.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

MAX_PATH_BYTES = 107  # sizeof(sun_path) - 1 on Linux
PRIVATE_PREFIX = "isthmus-sds-"
SOCKET_NAME = "SDS"
_PRIVATE_SAMPLE = f"{PRIVATE_PREFIX}XXXXXXXX"  # tempfile.mkdtemp adds 8 random characters

NATURAL = "natural"
RELATIVE = "relative"
PRIVATE = "private"


class SocketPathError(ValueError):
    """No usable socket path: names the requested path and the limit."""


@dataclass(frozen=True)
class SocketPlan:
    kind: str  # NATURAL, RELATIVE or PRIVATE
    requested: Path  # absolute
    path: str  # what the agent binds and the bootstrap names ("" for PRIVATE until prepared)
    base: str = ""  # PRIVATE: the directory the private directory is made in
    private_dir: str = ""  # PRIVATE, once prepared


def fits(path: str) -> bool:
    return len(os.fsencode(path)) <= MAX_PATH_BYTES


def choose(requested: Path, cwd: Path, bases: list[str]) -> SocketPlan:
    """The socket path for `requested` (made absolute against `cwd`), see the module docstring.
    `bases`: candidate parents for a private directory, most preferred first."""
    requested = requested if requested.is_absolute() else cwd / requested
    if fits(str(requested)):
        return SocketPlan(NATURAL, requested, str(requested))
    relative = os.path.relpath(requested, cwd)
    if fits(relative):
        return SocketPlan(RELATIVE, requested, relative)
    for base in bases:
        if base and os.path.isabs(base) and fits(f"{base.rstrip('/')}/{_PRIVATE_SAMPLE}/{SOCKET_NAME}"):
            return SocketPlan(PRIVATE, requested, "", base=base.rstrip("/") or "/")
    raise SocketPathError(
        f"SDS socket {requested}: {len(os.fsencode(str(requested)))} bytes, and a Unix socket path can have "
        f"at most {MAX_PATH_BYTES}; relative to the working directory it is still "
        f"{len(os.fsencode(relative))} bytes, and no short private directory is possible under "
        f"{' or '.join(b for b in bases if b) or 'any base'}. Use a shorter --state-dir (or --sds-socket)."
    )


def private_bases(environ: dict[str, str] | None = None, euid: int | None = None) -> list[str]:
    """$XDG_RUNTIME_DIR when it is a directory owned by this user (as root in transparent mode, the
    agent runs as the proxy's user and the inherited one is not its), then /tmp."""
    env = os.environ if environ is None else environ
    uid = os.geteuid() if euid is None else euid
    bases = []
    runtime = env.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isabs(runtime):
        with contextlib.suppress(OSError):
            st = os.stat(runtime)
            if st.st_uid == uid and os.path.isdir(runtime) and os.access(runtime, os.W_OK | os.X_OK):
                bases.append(runtime)
    bases.append("/tmp")
    return bases


def _is_private_dir(path: Path) -> bool:
    """A directory we made (name, ownership, a real directory): safe to remove."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return (
        path.name.startswith(PRIVATE_PREFIX)
        and stat.S_ISDIR(st.st_mode)
        and st.st_uid == os.geteuid()
        and path.parent.is_absolute()
    )


def _remove_stale_link(requested: Path) -> None:
    """A symlink at the requested path from an earlier (killed) agent: remove it and its private dir."""
    if not requested.is_symlink():
        return
    target = Path(os.readlink(requested))
    if target.name == SOCKET_NAME and _is_private_dir(target.parent):
        shutil.rmtree(target.parent, ignore_errors=True)
    requested.unlink(missing_ok=True)


def prepare(plan: SocketPlan) -> SocketPlan:
    """Make the socket's place ready to bind: the parent directory exists, no stale socket or link is
    left; for PRIVATE, the 0700 directory is created and the requested path links to the socket in it."""
    _remove_stale_link(plan.requested)
    plan.requested.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(plan.requested)  # a stale socket from an earlier run
    if plan.kind != PRIVATE:
        return plan
    try:
        private = tempfile.mkdtemp(prefix=PRIVATE_PREFIX, dir=plan.base)  # mode 0700
    except OSError as e:
        raise SocketPathError(
            f"SDS socket {plan.requested} is longer than {MAX_PATH_BYTES} bytes, and a short directory "
            f"cannot be made under {plan.base}: {e.strerror or e}"
        ) from None
    path = f"{private}/{SOCKET_NAME}"
    os.symlink(path, plan.requested)
    return SocketPlan(plan.kind, plan.requested, path, base=plan.base, private_dir=private)


def release(plan: SocketPlan) -> None:
    """After the server stopped: remove the socket (and, for PRIVATE, the link and the directory)."""
    if plan.kind == PRIVATE:
        if plan.requested.is_symlink() and os.readlink(plan.requested) == plan.path:
            plan.requested.unlink(missing_ok=True)
        if plan.private_dir and _is_private_dir(Path(plan.private_dir)):
            shutil.rmtree(plan.private_dir, ignore_errors=True)
        return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(plan.path)
