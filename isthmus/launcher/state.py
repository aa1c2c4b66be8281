"""The state file of a running `isthmus up`: where it keeps its files, and the PIDs it started.

`isthmus up` writes ``<state dir>/state.json`` once everything is ready and removes it when it has
stopped; `isthmus down` and `isthmus status` read it. Only PIDs recorded here are ever signalled.
With ``--transparent`` it also records the run's namespace prefix and run id (``netns_prefix``,
``netns_run_id``), so `isthmus down` removes exactly that run's namespaces, bridge, veths and
/etc/netns entries even when `isthmus up` was SIGKILLed.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

DEFAULT_STATE_DIR = ".isthmus/up"
FILE = "state.json"
LOGS = "logs"  # <state dir>/logs: one <workload>.log per process and mesh.log with all (isthmus logs)


@dataclass
class UpState:
    supervisor_pid: int
    children: dict[str, int] = field(default_factory=dict)
    gateway_url: str = ""
    dashboard_url: str = ""
    pilot_url: str = ""
    log_file: str = ""
    netns_prefix: str = ""  # transparent mode: the run's namespaces are <prefix><run id>[-...]
    netns_run_id: str = ""


def path(state_dir: str | Path) -> Path:
    return Path(state_dir) / FILE


def logs_dir(state_dir: str | Path) -> Path:
    return Path(state_dir) / LOGS


def write(state_dir: str | Path, state: UpState) -> None:
    p = path(state_dir)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2) + "\n")
    os.replace(tmp, p)


def read(state_dir: str | Path) -> UpState | None:
    """The recorded state, or None when nothing runs there. ValueError for a damaged file."""
    p = path(state_dir)
    try:
        raw = json.loads(p.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: not valid JSON ({e})") from None
    try:
        return UpState(
            supervisor_pid=int(raw["supervisor_pid"]),
            children={str(k): int(v) for k, v in (raw.get("children") or {}).items()},
            gateway_url=str(raw.get("gateway_url") or ""),
            dashboard_url=str(raw.get("dashboard_url") or ""),
            pilot_url=str(raw.get("pilot_url") or ""),
            log_file=str(raw.get("log_file") or ""),
            netns_prefix=str(raw.get("netns_prefix") or ""),
            netns_run_id=str(raw.get("netns_run_id") or ""),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{p}: not an isthmus state file ({e})") from None


def remove(state_dir: str | Path, supervisor_pid: int) -> None:
    """Remove the file, but only if it is still the one this supervisor wrote."""
    try:
        current = read(state_dir)
    except ValueError:
        return
    if current is not None and current.supervisor_pid == supervisor_pid:
        path(state_dir).unlink(missing_ok=True)


def alive(pid: int) -> bool:
    """True when the PID exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
