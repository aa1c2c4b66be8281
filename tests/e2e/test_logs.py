"""`isthmus logs` against a real mesh run in the background (`isthmus up -d`), as a user follows it:
one workload's output, its sidecar's (-c istio-proxy), everything prefixed, output kept across a
crash and restart of the app, `-f` printing the restarted app's lines live and ending when
`isthmus down` stops the mesh. (The foreground `make demo` case is in test_newcomer.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from isthmus.launcher import state
from tests.support.mesh import SAMPLES, free_block

pytestmark = pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"needs Istio's samples in {SAMPLES}")
LISTENING = "event=server.listening"


def isthmus(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "isthmus", *args], capture_output=True, text=True, timeout=timeout
    )


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, what()
        time.sleep(0.2)


@pytest.mark.timeout(420)
def test_logs_of_a_detached_mesh(tmp_path):
    control, base = free_block()
    sd = str(tmp_path / "s")
    pids: set[int] = set()
    follower = None
    try:
        up = isthmus(
            "up", "-d", "--control-address", control, "--address-base", base, "--state-dir", sd,
            "--drain", "1s", timeout=300,
        )  # fmt: skip
        st = state.read(sd)
        if st is not None:
            pids |= {st.supervisor_pid, *st.children.values()}
        assert up.returncode == 0, up.stdout + up.stderr

        ratings = isthmus("logs", "ratings", "--state-dir", sd)
        assert ratings.returncode == 0, ratings.stderr
        assert ratings.stdout.count(LISTENING) == 1 and "component=ratings" in ratings.stdout, ratings.stdout
        sidecar = isthmus("logs", "ratings", "-c", "istio-proxy", "--tail", "3", "--state-dir", sd)
        assert sidecar.returncode == 0 and 1 <= len(sidecar.stdout.splitlines()) <= 3, sidecar.stderr
        assert "component=ratings" not in sidecar.stdout
        every = isthmus("logs", "--state-dir", sd)
        assert every.returncode == 0
        for name in ("citadel", "pilot", "mixer", "ratings", "ratings-sidecar", "istio-ingressgateway"):
            assert f"\n{name} " in "\n" + every.stdout, f"no line from {name} in isthmus logs"

        with open(tmp_path / "follow.out", "wb") as out:
            follower = subprocess.Popen(
                [sys.executable, "-m", "isthmus", "logs", "-f", "ratings", "--tail", "0", "--state-dir", sd],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        pids.add(follower.pid)

        # The app crashes; the supervisor restarts it (new PID in the state file). Its log keeps both runs.
        old = state.read(sd).children["ratings"]
        os.killpg(old, signal.SIGKILL)

        def restarted():
            current = state.read(sd)
            new = current.children.get("ratings") if current else None
            return new if new and new != old else None

        new = wait_for(restarted, 60, lambda: "ratings was not restarted")
        pids.add(new)

        def both_runs():
            out = isthmus("logs", "ratings", "--state-dir", sd).stdout
            return out if out.count(LISTENING) == 2 else None

        wait_for(both_runs, 60, lambda: "the restarted ratings' output is not in its log")
        wait_for(
            lambda: LISTENING in (tmp_path / "follow.out").read_text(errors="replace"),
            30,
            lambda: f"isthmus logs -f did not print the new lines: {(tmp_path / 'follow.out').read_text()}",
        )

        down = isthmus("down", "--state-dir", sd, timeout=120)
        assert down.returncode == 0, down.stderr
        assert follower.wait(30) == 0  # -f ends with the mesh
        gone = isthmus("logs", "ratings", "--state-dir", sd)
        assert gone.returncode == 1 and "no mesh is running" in gone.stderr
    finally:
        if follower is not None and follower.poll() is None:
            follower.kill()
            follower.wait()
        st = state.read(sd) if os.path.exists(state.path(sd)) else None
        if st is not None and state.alive(st.supervisor_pid):
            isthmus("down", "--state-dir", sd, timeout=120)
            pids |= {st.supervisor_pid, *st.children.values()}
        for pid in pids:
            if state.alive(pid):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
