"""The supervisor's state machine with a fake process and a fake admin: restart with back-off, readiness
mirrors the proxy's, drain then stop on shutdown (escalating to signals), no restart after shutdown."""

from __future__ import annotations

import asyncio
import signal

import pytest

from proxy.agent.supervisor import RestartBackoff, State, Supervisor


class FakeProcess:
    def __init__(self, pid: int, exits_on: set[int]) -> None:
        self.pid = pid
        self.exits_on = exits_on  # signals that end it
        self.signals: list[int] = []
        self._code: asyncio.Future = asyncio.get_running_loop().create_future()

    def exit(self, code: int) -> None:
        if not self._code.done():
            self._code.set_result(code)

    async def wait(self) -> int:
        return await asyncio.shield(self._code)

    def signal(self, sig: int) -> None:
        self.signals.append(sig)
        if sig in self.exits_on:
            self.exit(-sig)


class FakeLauncher:
    def __init__(self, exits_on=(signal.SIGTERM, signal.SIGKILL)) -> None:
        self.started: list[FakeProcess] = []
        self.exits_on = set(exits_on)
        self.fail_next = 0
        self.new_process = asyncio.Event()

    async def start(self) -> FakeProcess:
        if self.fail_next:
            self.fail_next -= 1
            raise OSError("exec failed")
        proc = FakeProcess(1000 + len(self.started), self.exits_on)
        self.started.append(proc)
        self.new_process.set()
        return proc

    async def next_start(self, count: int) -> FakeProcess:
        async with asyncio.timeout(5):
            while len(self.started) < count:
                self.new_process.clear()
                await self.new_process.wait()
        return self.started[count - 1]


class FakeAdmin:
    def __init__(self, launcher: FakeLauncher, quit_exits: bool = True) -> None:
        self.launcher = launcher
        self.posts: list[str] = []
        self.live = True
        self.reachable = True
        self.quit_exits = quit_exits

    async def post(self, path: str) -> int:
        if not self.reachable:
            raise OSError("connection refused")
        self.posts.append(path)
        if path == "/quitquitquit" and self.quit_exits:
            self.launcher.started[-1].exit(0)
        return 200

    async def ready(self) -> bool:
        if not self.reachable:
            raise OSError("connection refused")
        return self.live


def make(drain=0.05, quit_exits=True, exit_grace=0.05, inbound_only=True, exits_on=(15, 9)):
    launcher = FakeLauncher(exits_on)
    admin = FakeAdmin(launcher, quit_exits)
    sup = Supervisor(
        launcher,
        admin,
        drain_duration=drain,
        inbound_only_drain=inbound_only,
        backoff=RestartBackoff(initial=0.01, maximum=0.05),
        exit_grace=exit_grace,
    )
    return sup, launcher, admin


def test_backoff_grows_caps_and_resets_after_a_stable_run():
    b = RestartBackoff(initial=0.2, maximum=1.0, stable_after=10)
    assert [b.next_delay(0.1) for _ in range(5)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    assert b.next_delay(30) == 0.2  # it ran long enough: start over


async def test_a_dead_proxy_is_restarted_and_readiness_follows_it():
    sup, launcher, admin = make()
    task = asyncio.create_task(sup.run())
    first = await launcher.next_start(1)
    assert sup.pid == first.pid and sup.state is State.RUNNING
    assert await sup.ready()
    admin.live = False  # proxy up but not LIVE yet (e.g. waiting for pilot)
    assert not await sup.ready()
    admin.live = True
    first.exit(-9)  # SIGKILL from outside
    second = await launcher.next_start(2)
    assert second.pid != first.pid
    assert sup.restarts == 1 and sup.last_exit_code == -9
    assert sup.snapshot()["proxy_pid"] == second.pid
    await sup.drain_and_stop()
    await asyncio.wait_for(task, 5)


async def test_not_ready_while_dead_or_admin_unreachable():
    sup, launcher, admin = make()
    assert not await sup.ready()  # nothing started
    task = asyncio.create_task(sup.run())
    await launcher.next_start(1)
    admin.reachable = False
    assert not await sup.ready()
    admin.reachable = True
    await sup.drain_and_stop()
    await asyncio.wait_for(task, 5)
    assert not await sup.ready()


async def test_a_failing_exec_is_retried():
    sup, launcher, _ = make()
    launcher.fail_next = 2
    task = asyncio.create_task(sup.run())
    await launcher.next_start(1)
    assert sup.starts == 1
    await sup.drain_and_stop()
    await asyncio.wait_for(task, 5)


@pytest.mark.parametrize(("inbound_only", "path"), [(True, "/drain_listeners?inboundonly&graceful"),
                                                     (False, "/drain_listeners?graceful")])  # fmt: skip
async def test_shutdown_drains_waits_then_quits_and_never_restarts(inbound_only, path):
    sup, launcher, admin = make(drain=0.2, inbound_only=inbound_only)
    task = asyncio.create_task(sup.run())
    proc = await launcher.next_start(1)
    stopping = asyncio.create_task(sup.drain_and_stop())
    await asyncio.sleep(0.05)
    assert admin.posts == [path]
    assert sup.state is State.DRAINING and not await sup.ready()
    assert not stopping.done()  # still inside the drain duration
    await asyncio.wait_for(stopping, 5)
    assert admin.posts == [path, "/quitquitquit"]
    assert proc.signals == []  # quitquitquit was enough
    await asyncio.wait_for(task, 5)
    assert sup.state is State.STOPPED and sup.pid is None
    assert len(launcher.started) == 1


async def test_a_proxy_ignoring_quitquitquit_gets_sigterm_then_sigkill():
    sup, launcher, admin = make(quit_exits=False, exits_on=(signal.SIGKILL,))
    task = asyncio.create_task(sup.run())
    proc = await launcher.next_start(1)
    await asyncio.wait_for(sup.drain_and_stop(), 5)
    assert proc.signals == [signal.SIGTERM, signal.SIGKILL]
    await asyncio.wait_for(task, 5)
    assert len(launcher.started) == 1


async def test_unreachable_admin_still_stops_the_proxy():
    sup, launcher, admin = make()
    task = asyncio.create_task(sup.run())
    proc = await launcher.next_start(1)
    admin.reachable = False
    await asyncio.wait_for(sup.drain_and_stop(), 5)
    assert proc.signals == [signal.SIGTERM]
    await asyncio.wait_for(task, 5)


async def test_proxy_exiting_during_the_drain_ends_the_wait():
    sup, launcher, admin = make(drain=30)
    task = asyncio.create_task(sup.run())
    proc = await launcher.next_start(1)
    stopping = asyncio.create_task(sup.drain_and_stop())
    await asyncio.sleep(0.02)
    proc.exit(0)
    await asyncio.wait_for(stopping, 5)  # did not wait the 30 s
    await asyncio.wait_for(task, 5)
    assert len(launcher.started) == 1


async def test_shutdown_during_backoff_starts_nothing_more():
    sup, launcher, _ = make()
    sup.backoff = RestartBackoff(initial=30, maximum=30)
    task = asyncio.create_task(sup.run())
    proc = await launcher.next_start(1)
    proc.exit(1)
    await asyncio.sleep(0.02)
    assert sup.state is State.BACKOFF
    await asyncio.wait_for(sup.drain_and_stop(), 5)
    await asyncio.wait_for(task, 5)
    assert len(launcher.started) == 1 and sup.state is State.STOPPED


async def test_kill_signals_the_running_proxy_at_once():
    sup, launcher, _ = make(drain=30)
    task = asyncio.create_task(sup.run())
    proc = await launcher.next_start(1)
    stopping = asyncio.create_task(sup.drain_and_stop())
    await asyncio.sleep(0.02)
    sup.kill(signal.SIGKILL)  # second SIGTERM to the agent
    await asyncio.wait_for(stopping, 5)
    assert proc.signals == [signal.SIGKILL]
    await asyncio.wait_for(task, 5)
