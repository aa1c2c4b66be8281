"""`isthmus up` (the whole mesh) refuses bad flags before starting anything, and `down`/`status` say
clearly when nothing runs."""

import os

import pytest

from isthmus.cli import build_parser, main
from isthmus.launcher import state


@pytest.mark.parametrize(
    "argv, message",
    [
        (["up", "--control-address", "10.0.0.1"], "--control-address: 10.0.0.1 is not a loopback address"),
        (["up", "--control-address", "x"], "--control-address: not an IPv4 address"),
        (["up", "--drain", "soon"], "--drain"),
        (["up", "--redis", "localhost:6379"], "expected redis://HOST:PORT[/DB]"),
        (["up", "--apps-only", "-d"], "--apps-only runs Bookinfo alone in the foreground"),
    ],
)
def test_bad_mesh_flags_exit_2_and_write_nothing(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--state-dir", str(tmp_path / "st")])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "st").exists()


def test_a_second_up_on_the_same_state_dir_is_refused(capsys, tmp_path):
    state.write(tmp_path, state.UpState(supervisor_pid=os.getpid()))  # "running": this process is alive
    with pytest.raises(SystemExit) as exc:
        main(["up", "--state-dir", str(tmp_path)])
    assert exc.value.code == 2
    assert "a mesh already runs from" in capsys.readouterr().err
    assert not (tmp_path / "config").exists()


def test_up_mesh_defaults():
    args = build_parser().parse_args(["up"])
    assert (args.control_address, args.state_dir, args.detach, args.apps_only) == (
        "127.0.0.1",
        ".isthmus/up",
        False,
        False,
    )


@pytest.mark.parametrize("command", ["down", "status"])
def test_down_and_status_with_nothing_running(command, capsys, tmp_path):
    assert main([command, "--state-dir", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "state.json" in captured.out + captured.err
