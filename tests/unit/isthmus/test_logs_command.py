"""`isthmus logs`: which file a name picks, --tail, following a growing file, and its errors (no mesh
running, unknown names) against a state dir written by hand."""

import io
import os

import pytest

from isthmus.cli import main
from isthmus.commands import logs
from isthmus.launcher import state, supervisor

KNOWN = [
    "citadel",
    "pilot",
    "mixer",
    "productpage",
    "productpage-sidecar",
    "reviews-v2",
    "reviews-v2-sidecar",
]


def test_the_combined_file_is_the_one_the_supervisor_writes():
    assert logs.MESH_LOG == supervisor.MESH_LOG


@pytest.mark.parametrize(
    "name, container, picked",
    [
        (None, None, None),
        ("pilot", None, "pilot"),
        ("reviews-v2", None, "reviews-v2"),
        ("reviews-v2-sidecar", None, "reviews-v2-sidecar"),
        ("productpage", "istio-proxy", "productpage-sidecar"),
        ("productpage-sidecar", "istio-proxy", "productpage-sidecar"),
        ("productpage-sidecar", "app", "productpage"),
        ("productpage", "app", "productpage"),
    ],
)
def test_resolve(name, container, picked):
    assert logs.resolve(name, container, KNOWN) == picked


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(logs.UnknownName) as e:
        logs.resolve("reviews-v9", None, KNOWN)
    assert "'reviews-v9'" in str(e.value)
    assert "citadel, mixer, pilot, productpage, productpage-sidecar, reviews-v2, reviews-v2-sidecar" in str(
        e.value
    )
    with pytest.raises(logs.UnknownName, match="'pilot-sidecar'"):
        logs.resolve("pilot", "istio-proxy", KNOWN)
    with pytest.raises(logs.UnknownName, match="needs a NAME"):
        logs.resolve(None, "app", KNOWN)


@pytest.mark.parametrize(
    "data, n, tail",
    [
        (b"a\nb\nc\n", -1, b"a\nb\nc\n"),
        (b"a\nb\nc\n", 0, b""),
        (b"a\nb\nc\n", 1, b"c\n"),
        (b"a\nb\nc\n", 2, b"b\nc\n"),
        (b"a\nb\nc\n", 3, b"a\nb\nc\n"),
        (b"a\nb\nc\n", 10, b"a\nb\nc\n"),
        (b"a\nb\nc", 1, b"c"),
        (b"a\nb\nc", 2, b"b\nc"),
        (b"", 5, b""),
        (b"\n\n", 1, b"\n"),
    ],
)
def test_last_lines(data, n, tail):
    assert logs.last_lines(data, n) == tail


def test_read_tail_reads_back_across_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(logs, "CHUNK", 7)
    p = tmp_path / "x.log"
    lines = [f"line {i}\n".encode() for i in range(100)]
    p.write_bytes(b"".join(lines))
    with open(p, "rb") as f:
        assert logs.read_tail(f, 3) == b"".join(lines[-3:])
        assert f.tell() == p.stat().st_size
    with open(p, "rb") as f:
        assert logs.read_tail(f, -1) == b"".join(lines)
    with open(p, "rb") as f:
        assert logs.read_tail(f, 1000) == b"".join(lines)


def test_follow_prints_appended_lines_until_the_mesh_stops(tmp_path):
    p = tmp_path / "x.log"
    p.write_bytes(b"old\n")
    writer = open(p, "ab", buffering=0)
    got = []
    polls = iter([True, True, True, False])
    steps = iter([b"new 1\n", b"new 2\n", b"last\n"])

    def sleep(_):
        writer.write(next(steps))  # the process writes while we wait

    with open(p, "rb") as f:
        f.seek(0, os.SEEK_END)
        logs.follow(f, got.append, lambda: next(polls), sleep=sleep)
    writer.close()
    assert b"".join(got) == b"new 1\nnew 2\nlast\n"


def test_follow_starts_over_when_a_new_mesh_truncates_the_file(tmp_path):
    p = tmp_path / "x.log"
    p.write_bytes(b"first run, a long line\n")
    got = []
    polls = iter([True, False])

    def sleep(_):
        p.write_bytes(b"second run\n")  # truncated and rewritten

    with open(p, "rb") as f:
        f.seek(0, os.SEEK_END)
        logs.follow(f, got.append, lambda: next(polls), sleep=sleep)
    assert b"".join(got) == b"second run\n"


# -- the command against a hand-written state dir ---------------------------------------------------


def write_mesh(tmp_path, supervisor_pid=None):
    d = tmp_path / "up"
    state.write(
        d, state.UpState(supervisor_pid=supervisor_pid or os.getpid(), children={"pilot": 1, "mixer": 2})
    )
    logs_dir = state.logs_dir(d)
    logs_dir.mkdir()
    (logs_dir / "pilot.log").write_text("p1\np2\np3\n")
    (logs_dir / "mixer.log").write_text("m1\n")
    (logs_dir / "mesh.log").write_text("pilot | p1\nmixer | m1\npilot | p2\npilot | p3\n")
    return d


class Out:
    def __init__(self):
        self.buffer = io.BytesIO()


def run_logs(monkeypatch, *argv):
    out = Out()
    monkeypatch.setattr("sys.stdout", out)
    code = main(["logs", *argv])
    return code, out.buffer.getvalue().decode()


def test_all_and_one_and_tail(tmp_path, monkeypatch):
    d = str(write_mesh(tmp_path))
    assert run_logs(monkeypatch, "--state-dir", d) == (0, "pilot | p1\nmixer | m1\npilot | p2\npilot | p3\n")
    assert run_logs(monkeypatch, "pilot", "--state-dir", d) == (0, "p1\np2\np3\n")
    assert run_logs(monkeypatch, "pilot", "--tail", "2", "--state-dir", d) == (0, "p2\np3\n")
    assert run_logs(monkeypatch, "--tail", "1", "--state-dir", d) == (0, "pilot | p3\n")


def test_no_mesh_running(tmp_path, monkeypatch, capsys):
    code, _ = run_logs(monkeypatch, "--state-dir", str(tmp_path / "nothing"))
    assert code == 1
    assert "no mesh is running from" in capsys.readouterr().err


def test_a_dead_supervisor_is_no_running_mesh(tmp_path, monkeypatch, capsys):
    d = str(write_mesh(tmp_path, supervisor_pid=2**22 + 12345))  # above pid_max's default: never alive
    code, _ = run_logs(monkeypatch, "pilot", "--state-dir", d)
    assert code == 1
    assert "is gone" in capsys.readouterr().err


def test_unknown_name(tmp_path, monkeypatch, capsys):
    d = str(write_mesh(tmp_path))
    code, out = run_logs(monkeypatch, "ratings", "--state-dir", d)
    assert (code, out) == (1, "")
    assert "no process 'ratings' in the mesh; known: mixer, pilot" in capsys.readouterr().err
