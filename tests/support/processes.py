"""Start real processes for tests and always tear them down, by PID, even when the test fails."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


class ProcessGroup:
    """Processes a test started. `stop_all()` ends each of them (and only them), newest first."""

    def __init__(self) -> None:
        self.procs: list[tuple[subprocess.Popen, Path]] = []

    def start(
        self,
        args: list[str],
        env: dict[str, str] | None = None,
        cwd: str | Path | None = None,
        stdin=subprocess.DEVNULL,
    ) -> subprocess.Popen:
        """Start `args` with output captured to a temp file (read it with `output(proc)`)."""
        log = Path(tempfile.mkstemp(prefix="isthmus-test-", suffix=".log")[1])
        full_env = dict(os.environ)
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        if env:
            full_env.update(env)
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=full_env,
                cwd=cwd or REPO,
                stdin=stdin,
                start_new_session=True,
            )
        self.procs.append((proc, log))
        return proc

    def python(self, *args: str, **kw) -> subprocess.Popen:
        return self.start([sys.executable, *args], **kw)

    def output(self, proc: subprocess.Popen) -> str:
        for p, log in self.procs:
            if p is proc:
                return log.read_text(errors="replace")
        raise KeyError(proc)

    def stop(self, proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        return proc.returncode

    def stop_all(self) -> None:
        for proc, log in reversed(self.procs):
            try:
                self.stop(proc)
            finally:
                log.unlink(missing_ok=True)
        self.procs.clear()
