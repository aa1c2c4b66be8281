"""Bad input to every entry point: unknown flags exit 2 with usage; a taken port names address:port."""

import socket
import subprocess
import sys

import pytest

from tests.support.net import free_port
from tests.support.processes import REPO

ENTRY_POINTS = {
    "bookinfo.productpage": [],
    "bookinfo.details": [],
    "bookinfo.reviews": [],
    "bookinfo.ratings": [],
    "pilot": [],
    "citadel": [],
    "mixer": [],
    "isthmus": ["up"],
}


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [sys.executable, "-m", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_help_prints_real_usage(module):
    r = run(module, *ENTRY_POINTS[module], "--help")
    assert r.returncode == 0
    assert r.stdout.startswith("usage: ") and "--log-level" in r.stdout


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_unknown_flag_exits_2_with_usage(module):
    r = run(module, *ENTRY_POINTS[module], "--no-such-flag")
    assert r.returncode == 2
    assert "usage: " in r.stderr and "unrecognized arguments: --no-such-flag" in r.stderr


@pytest.fixture
def taken():
    """A port that something is listening on, at 127.0.0.48."""
    sock = socket.socket()
    sock.bind(("127.0.0.48", free_port("127.0.0.48")))
    sock.listen()
    yield sock.getsockname()
    sock.close()


@pytest.mark.parametrize(
    "module", ["bookinfo.productpage", "bookinfo.details", "bookinfo.reviews", "bookinfo.ratings"]
)
def test_bookinfo_port_in_use(module, taken):
    address, port = taken
    r = run(module, "--address", address, "--port", str(port))
    assert r.returncode != 0
    assert f"cannot listen on {address}:{port}: Address already in use" in r.stderr


@pytest.mark.parametrize("module", ["pilot", "citadel", "mixer"])
def test_control_plane_port_in_use(module, taken):
    address, port = taken
    r = run(module, "--http-addr", f"{address}:{port}")
    assert r.returncode != 0
    assert f"cannot listen on {address}:{port}: Address already in use" in r.stderr


@pytest.mark.parametrize(
    "module, env, message",
    [
        ("bookinfo.details", {"LISTEN_PORT": "http"}, "LISTEN_PORT must be a port number"),
        ("bookinfo.reviews", {"SERVICE_VERSION": "v9"}, "SERVICE_VERSION must be one of v1, v2, v3"),
        ("bookinfo.productpage", {"DETAILS_SERVICE_PORT": "-1"}, "DETAILS_SERVICE_PORT must be between"),
        ("bookinfo.ratings", {"ISTHMUS_LOG_LEVEL": "loud"}, "unknown log level 'loud'"),
    ],
)
def test_bad_environment_exits_2_naming_the_variable(module, env, message):
    r = run(module, env=env)
    assert r.returncode == 2 and message in r.stderr and "usage: " in r.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["pilot", "--grpc-addr", "15010"], "expected HOST:PORT or :PORT"),
        (["citadel", "--max-ttl", "forever"], "expected a positive duration"),
    ],
)
def test_bad_flag_values_exit_2(args, message):
    r = run(*args)
    assert r.returncode == 2 and message in r.stderr
