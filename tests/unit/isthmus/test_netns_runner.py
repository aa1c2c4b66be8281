"""The netns runner with a fake `run`: rollback on a failed step, idempotent teardown, leftovers,
and the `isthmus netns cleanup` command's arguments."""

from __future__ import annotations

import atexit
import signal
import subprocess

import pytest

from isthmus.cli import main
from isthmus.launcher.netns import Workload, plan_mesh
from isthmus.launcher.netns_runner import NetnsError, NetnsMesh, as_user, in_netns, list_leftovers


class FakeIp:
    """Records commands; fails the first command containing `fail_on` with `error`."""

    def __init__(
        self, fail_on: str | None = None, error: str = "RTNETLINK answers: File exists", outputs=None
    ):
        self.calls: list[list[str]] = []
        self.fail_on = fail_on
        self.error = error
        self.outputs = outputs or {}

    def __call__(self, argv, **kw):
        self.calls.append(list(argv))
        joined = " ".join(argv)
        if self.fail_on and self.fail_on in joined:
            return subprocess.CompletedProcess(argv, 2, "", self.error)
        return subprocess.CompletedProcess(argv, 0, self.outputs.get(joined, ""), "")


@pytest.fixture
def plan():
    return plan_mesh([Workload("client"), Workload("server")], run_id="abc123")


def test_apply_writes_hosts_and_runs_the_plan_then_teardown_removes_all(plan, tmp_path):
    fake = FakeIp()
    mesh = NetnsMesh(plan, run=fake, netns_dir=str(tmp_path)).apply()
    hosts = tmp_path / "isth-abc123-server" / "hosts"
    assert hosts.read_text() == plan.hosts_file()
    assert [c[:4] for c in fake.calls][0] == ["ip", "netns", "add", "isth-abc123"]
    assert len(fake.calls) == len(plan.setup_commands())

    fake.calls.clear()
    assert mesh.teardown() == []
    dels = [c for c in fake.calls if c[:3] == ["ip", "netns", "del"]]
    assert [c[3] for c in dels] == ["isth-abc123-client", "isth-abc123-server", "isth-abc123"]
    assert not any(tmp_path.iterdir())
    fake.calls.clear()
    assert mesh.teardown() == [] and fake.calls == []  # the second call does nothing


def test_a_failed_step_removes_what_was_made_and_says_which_command(plan, tmp_path):
    fake = FakeIp(fail_on="route add default", error="Error: Nexthop has invalid gateway.")
    with pytest.raises(NetnsError, match="route add default .* Nexthop has invalid gateway"):
        NetnsMesh(plan, run=fake, netns_dir=str(tmp_path)).apply()
    dels = [c[3] for c in fake.calls if c[:3] == ["ip", "netns", "del"]]
    assert dels == ["isth-abc123-client", "isth-abc123-server", "isth-abc123"]
    assert not any(tmp_path.iterdir())


def test_teardown_ignores_what_is_already_gone_but_reports_other_failures(plan, tmp_path):
    gone = FakeIp(
        fail_on="netns del", error='Cannot remove namespace file "/run/netns/x": No such file or directory'
    )
    assert NetnsMesh(plan, run=gone, netns_dir=str(tmp_path)).teardown() == []
    busy = FakeIp(fail_on="netns del isth-abc123-server", error="Device or resource busy")
    problems = NetnsMesh(plan, run=busy, netns_dir=str(tmp_path)).teardown()
    assert len(problems) == 1 and "isth-abc123-server" in problems[0] and "busy" in problems[0]


def test_cleanup_hooks_are_registered_while_applied_and_removed_after(plan, tmp_path, monkeypatch):
    registered = []
    monkeypatch.setattr(atexit, "register", registered.append)
    monkeypatch.setattr(atexit, "unregister", registered.remove)
    before = signal.getsignal(signal.SIGTERM)
    mesh = NetnsMesh(plan, run=FakeIp(), netns_dir=str(tmp_path)).apply()
    assert registered == [mesh.teardown]
    assert signal.getsignal(signal.SIGTERM) == mesh._on_signal
    mesh.teardown()
    assert registered == [] and signal.getsignal(signal.SIGTERM) == before


def test_sigterm_tears_down_then_runs_the_previous_handler(plan, tmp_path):
    seen = []
    previous = signal.signal(signal.SIGTERM, lambda s, f: seen.append(s))
    try:
        fake = FakeIp()
        mesh = NetnsMesh(plan, run=fake, netns_dir=str(tmp_path)).apply()
        fake.calls.clear()
        mesh._on_signal(signal.SIGTERM, None)
        assert seen == [signal.SIGTERM]
        assert ["ip", "netns", "del", "isth-abc123"] in fake.calls
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_commands_run_in_the_namespace_as_the_proxy_uid():
    assert as_user(["python", "-m", "proxy"], None) == ["python", "-m", "proxy"]
    assert in_netns("isth-abc123-server", ["python"], uid=1337) == [
        "ip", "netns", "exec", "isth-abc123-server",
        "setpriv", "--reuid=1337", "--regid=1337", "--clear-groups", "--", "python",
    ]  # fmt: skip
    plan = plan_mesh([Workload("server")], run_id="abc123")
    mesh = NetnsMesh(plan, run=FakeIp())
    assert mesh.proxy_argv("server", ["x"])[4:7] == ["setpriv", "--reuid=1337", "--regid=1337"]
    with pytest.raises(KeyError, match="no workload 'nope'"):
        mesh.argv("nope", ["x"])


def test_list_leftovers_parses_ip_output_and_keeps_only_ours(tmp_path):
    (tmp_path / "isth-abc123-server").mkdir()
    (tmp_path / "someone-else").mkdir()
    fake = FakeIp(
        outputs={
            "ip netns list": "isth-abc123-server (id: 3)\nisth-abc123\nother (id: 1)\n",
            "ip -o link show": "1: lo: <LOOPBACK,UP> mtu 65536\n"
            "7: isth-abc123-v02@if2: <BROADCAST> mtu 1500\n"
            "8: isth-abc123-br: <BROADCAST> mtu 1500\n",
        }
    )
    found = list_leftovers("isth-", run=fake, netns_dir=str(tmp_path))
    assert found == {
        "netns": ["isth-abc123", "isth-abc123-server"],
        "links": ["isth-abc123-br", "isth-abc123-v02"],
        "netns_dirs": ["isth-abc123-server"],
    }


@pytest.mark.parametrize("prefix", ["", "eth", "x-y-z-w-"])
def test_cleanup_refuses_a_prefix_that_could_match_other_things(prefix, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["netns", "cleanup", "--prefix", prefix])
    assert exc.value.code == 2
    assert "--prefix" in capsys.readouterr().err


def test_netns_needs_a_subcommand(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["netns"])
    assert exc.value.code == 2
    assert "usage: isthmus netns" in capsys.readouterr().err
