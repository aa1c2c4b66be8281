"""Where the agent serves SDS when the requested socket path is longer than a Unix socket address."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from proxy.agent import sds_path
from proxy.agent.sds_path import MAX_PATH_BYTES, NATURAL, PRIVATE, RELATIVE, SocketPathError, choose


def long_dir(root: Path, total: int) -> Path:
    """A directory under `root` whose path is `total` bytes long."""
    need = total - len(str(root)) - 1
    parts, d = [], root
    while need > 0:
        n = min(need, 60)
        if need - n == 1:  # never leave a one-byte remainder ("/" alone)
            n -= 1
        parts.append("d" * max(n - 1, 1))
        need -= len(parts[-1]) + 1
    for p in parts:
        d = d / p
    return d


def test_a_path_that_fits_is_used_as_is():
    plan = choose(Path("/var/run/isthmus/reviews-v1/SDS"), Path("/"), ["/tmp"])
    assert plan.kind == NATURAL and plan.path == "/var/run/isthmus/reviews-v1/SDS"


def test_a_relative_request_is_made_absolute_first():
    plan = choose(Path("etc/istio/proxy/SDS"), Path("/srv/w"), ["/tmp"])
    assert plan.kind == NATURAL and plan.path == "/srv/w/etc/istio/proxy/SDS"


def test_exactly_107_bytes_fits_and_108_does_not():
    base = "/" + "a" * (MAX_PATH_BYTES - len("//SDS")) + "/SDS"
    assert len(base) == MAX_PATH_BYTES and sds_path.fits(base)
    assert not sds_path.fits(base + "x")
    assert choose(Path(base), Path("/"), []).kind == NATURAL


def test_a_long_path_below_the_working_directory_becomes_relative():
    cwd = Path("/home/someone/" + "x" * 80 + "/isthmus")
    plan = choose(cwd / ".isthmus/up/proxies/productpage-v1/SDS", cwd, ["/tmp"])
    assert plan.kind == RELATIVE and plan.path == ".isthmus/up/proxies/productpage-v1/SDS"


def test_a_long_path_far_from_the_working_directory_gets_a_private_directory():
    requested = Path("/state/" + "y" * 120 + "/proxies/reviews-v1/SDS")
    plan = choose(requested, Path("/"), ["", "/run/user/1000", "/tmp"])
    assert plan.kind == PRIVATE and plan.base == "/run/user/1000" and plan.requested == requested


def test_a_long_runtime_dir_is_passed_over_for_tmp():
    plan = choose(Path("/s/" + "y" * 120 + "/SDS"), Path("/"), ["/run/" + "z" * 100, "/tmp"])
    assert plan.kind == PRIVATE and plan.base == "/tmp"


def test_no_way_to_fit_is_a_clear_error_naming_the_path_and_the_limit():
    requested = Path("/s/" + "y" * 120 + "/SDS")
    with pytest.raises(SocketPathError) as e:
        choose(requested, Path("/"), ["/" + "z" * 120])
    assert str(requested) in str(e.value) and "at most 107" in str(e.value)


def test_private_bases_skip_a_runtime_dir_that_is_not_ours(tmp_path):
    mine = tmp_path / "run"
    mine.mkdir()
    assert sds_path.private_bases({"XDG_RUNTIME_DIR": str(mine)}) == [str(mine), "/tmp"]
    assert sds_path.private_bases({"XDG_RUNTIME_DIR": str(mine)}, euid=os.geteuid() + 1) == ["/tmp"]
    assert sds_path.private_bases({}) == ["/tmp"]
    assert sds_path.private_bases({"XDG_RUNTIME_DIR": str(tmp_path / "missing")}) == ["/tmp"]


def bind(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    return s


def test_a_private_directory_is_0700_linked_from_the_requested_path_and_removed(tmp_path):
    requested = long_dir(tmp_path, 140) / "SDS"
    plan = sds_path.prepare(choose(requested, Path("/"), [str(tmp_path)]))
    assert plan.kind == PRIVATE and sds_path.fits(plan.path)
    assert stat.S_IMODE(os.stat(plan.private_dir).st_mode) == 0o700
    assert os.readlink(requested) == plan.path
    with bind(plan.path):
        assert requested.exists()  # the link leads to the live socket
    sds_path.release(plan)
    assert not requested.is_symlink() and not os.path.exists(plan.private_dir)


def test_a_killed_agents_private_directory_is_removed_by_the_next(tmp_path):
    requested = long_dir(tmp_path, 140) / "SDS"
    first = sds_path.prepare(choose(requested, Path("/"), [str(tmp_path)]))
    bind(first.path).close()  # the socket file stays, as after SIGKILL
    second = sds_path.prepare(choose(requested, Path("/"), [str(tmp_path)]))
    assert not os.path.exists(first.private_dir) and os.readlink(requested) == second.path
    sds_path.release(second)


def test_a_link_to_something_not_ours_is_replaced_but_its_target_left_alone(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "SDS").write_text("not ours")
    requested = long_dir(tmp_path, 140) / "SDS"
    requested.parent.mkdir(parents=True)
    requested.symlink_to(other / "SDS")
    plan = sds_path.prepare(choose(requested, Path("/"), [str(tmp_path)]))
    assert (other / "SDS").read_text() == "not ours"
    sds_path.release(plan)


def test_natural_and_relative_sockets_are_removed_on_release(tmp_path, monkeypatch):
    requested = tmp_path / "agent" / "SDS"
    plan = sds_path.prepare(choose(requested, tmp_path, []))
    assert requested.parent.is_dir()
    bind(plan.path).close()
    sds_path.release(plan)
    assert not requested.exists()

    monkeypatch.chdir(tmp_path)
    deep = long_dir(tmp_path, 140) / "SDS"
    plan = sds_path.prepare(choose(deep, tmp_path, []))
    assert plan.kind == RELATIVE
    bind(plan.path).close()
    assert deep.exists()
    sds_path.release(plan)
    assert not deep.exists()
