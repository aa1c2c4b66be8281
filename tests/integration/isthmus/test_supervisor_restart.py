"""The launcher's supervisor with real child processes: a child SIGKILLed after start-up is restarted
with back-off, and the state file (`on_ready`) names the new PID at once, so `isthmus status` and
`isthmus down` never act on a stale PID."""

from __future__ import annotations

import asyncio
import io
import os
import signal

from isthmus.launcher import state
from isthmus.launcher.backoff import Backoff
from isthmus.launcher.supervisor import Supervisor
from isthmus.launcher.topology import Topology, Workload
from tests.support.net import free_port


def web(name: str, port: int, depends_on: tuple[str, ...] = ()) -> Workload:
    return Workload(
        name=name, module="http.server", address="127.0.0.1", port=port, ready_path="/",
        args=("--bind", "127.0.0.1", str(port)), depends_on=depends_on,
    )  # fmt: skip


async def _wait(check, timeout: float = 30.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not (result := check()):
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)
    return result


def test_a_killed_child_is_restarted_and_the_state_file_names_its_new_pid(tmp_path):
    a, b = web("a", free_port()), web("b", free_port(), depends_on=("a",))
    recorded: list[dict[str, int]] = []

    def record(pids: dict[str, int]) -> None:
        recorded.append(dict(pids))
        state.write(tmp_path, state.UpState(supervisor_pid=os.getpid(), children=pids))

    sup = Supervisor(
        Topology(workloads=(a, b), entry="b"),
        out=io.StringIO(),
        backoff=Backoff(initial=0.1),
        on_ready=record,
    )
    seen: dict = {}

    async def scenario() -> None:
        run = asyncio.create_task(sup.run())
        try:
            first = await _wait(lambda: state.read(tmp_path))
            old = first.children["a"]
            os.kill(old, signal.SIGKILL)  # our own child, by PID
            now = await _wait(lambda: (s := state.read(tmp_path)) and s.children["a"] != old and s)
            seen.update(old=old, new=now.children["a"], b=now.children["b"], first_b=first.children["b"])
            seen["alive"] = state.alive(now.children["a"]) and not state.alive(old)
            seen["ready"] = await _wait(lambda: sup.children["a"].running and sup.children["a"].ever_ready)
        finally:
            sup._on_signal(signal.SIGTERM)
            await asyncio.wait_for(run, 60)

    asyncio.run(scenario())
    assert seen["alive"], seen
    assert seen["b"] == seen["first_b"]  # the other child was left alone
    assert len(recorded) == 2 and recorded[1] == {"a": seen["new"], "b": seen["b"]}
    assert not state.alive(seen["new"]) and not state.alive(seen["b"])  # stopped at the end
