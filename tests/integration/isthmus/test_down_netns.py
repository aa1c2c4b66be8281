"""`isthmus down` after `isthmus up --transparent` was SIGKILLed (needs root): the state file names the
run's namespace prefix and run id, and `isthmus down` removes exactly that run's namespaces (with their
veths and the bridge) and /etc/netns entries once its processes are gone; another run with the same
prefix is left alone.

The smallest real piece stands in for `isthmus up --transparent`: a process that creates the namespaces
(NetnsMesh, as `isthmus up` does), starts a workload process inside one, and writes the state file with
`isthmus up`'s own recorder (local.state_recorder).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from isthmus.launcher import state
from isthmus.launcher.netns import NETNS_DIR, of_run
from isthmus.launcher.netns_runner import list_leftovers, remove_leftovers
from tests.support.processes import REPO

pytestmark = pytest.mark.netns

PREFIX = "isdn-"  # no other test uses it

FAKE_UP = """
import signal, subprocess, sys
from types import SimpleNamespace
from isthmus.launcher import local
from isthmus.launcher.netns import Workload, plan_mesh
from isthmus.launcher.netns_runner import NetnsMesh
net = plan_mesh([Workload("a"), Workload("b")], prefix=sys.argv[1])
mesh = NetnsMesh(net).apply()
app = subprocess.Popen(mesh.argv("a", ["sleep", "600"]), start_new_session=True)
options = SimpleNamespace(state_dir=sys.argv[2], gateway_url="", dashboard_url="", pilot_url="")
local.state_recorder(options, net=net)({"a": app.pid})
print(net.run_id, flush=True)
signal.pause()
"""


def fake_up(state_dir: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", FAKE_UP, PREFIX, str(state_dir)],
        stdout=subprocess.PIPE, text=True, cwd=REPO, start_new_session=True,
    )  # fmt: skip
    run_id = proc.stdout.readline().strip()
    proc.stdout.close()
    assert len(run_id) == 6, f"the fake isthmus up did not start (exit {proc.poll()})"
    return proc, run_id


def present(run_id: str) -> list[str]:
    """Every namespace, host link and /etc/netns dir of the run."""
    found = of_run(list_leftovers(PREFIX), PREFIX, run_id)
    return sorted(n for names in found.values() for n in names)


def links_in_root() -> str:
    return subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout


def test_isthmus_down_removes_the_namespaces_of_a_sigkilled_transparent_run_and_only_those(tmp_path):
    procs, runs = [], []
    try:
        for name in ("killed", "other"):
            proc, run_id = fake_up(tmp_path / name)
            procs.append(proc)
            runs.append(run_id)
        killed, other = runs
        recorded = json.loads((tmp_path / "killed" / state.FILE).read_text())
        assert recorded["netns_prefix"] == PREFIX and recorded["netns_run_id"] == killed
        app_pid = recorded["children"]["a"]
        assert len(present(killed)) == 5  # hub + 2 workload namespaces + 2 /etc/netns dirs
        hub_links = subprocess.run(
            ["ip", "-n", f"{PREFIX}{killed}", "-o", "link"], capture_output=True, text=True
        )
        assert f"{PREFIX}{killed}-br" in hub_links.stdout and f"{PREFIX}{killed}-v" in hub_links.stdout

        procs[0].kill()  # SIGKILL: no handler of its own removes anything
        procs[0].wait(10)
        assert len(present(killed)) == 5 and state.alive(app_pid)

        result = subprocess.run(
            [sys.executable, "-m", "isthmus", "down", "--state-dir", str(tmp_path / "killed")],
            capture_output=True, text=True, cwd=REPO, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"removing namespace {PREFIX}{killed}" in result.stdout
        assert not state.alive(app_pid)
        assert present(killed) == []
        assert not any(Path(NETNS_DIR, f"{PREFIX}{killed}-{w}").exists() for w in ("a", "b"))
        assert f"{PREFIX}{killed}" not in links_in_root()
        assert not (tmp_path / "killed" / state.FILE).exists()
        # the other run (same prefix) is untouched
        assert len(present(other)) == 5 and procs[1].poll() is None

        # a second `isthmus down` finds nothing running
        again = subprocess.run(
            [sys.executable, "-m", "isthmus", "down", "--state-dir", str(tmp_path / "killed")],
            capture_output=True, text=True, cwd=REPO, timeout=60,
        )  # fmt: skip
        assert again.returncode == 1 and "nothing runs" in again.stderr
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # its NetnsMesh removes its own run
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        for run_id in runs:
            remove_leftovers(of_run(list_leftovers(PREFIX), PREFIX, run_id))
    assert all(present(r) == [] for r in runs)
