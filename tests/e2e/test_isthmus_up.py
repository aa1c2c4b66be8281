"""`isthmus up` end to end: it serves Bookinfo, restarts a crash, and leaves no process behind."""

import ipaddress
import os
import re
import signal
import socket

import httpx

from isthmus.launcher.topology import BOOKINFO_SLOTS
from tests.support.net import wait_for_http

from .isthmus_up import alive, free_port_on_all, group_alive, start


def test_up_serves_bookinfo_and_ctrl_c_leaves_no_process(procs):
    mesh = start(procs, "127.0.0.50")
    banner = mesh.wait_for_output(r"Bookinfo is up \(no sidecars yet\)\. Open (\S+)")
    assert banner.group(1) == mesh.url
    html = wait_for_http(mesh.url, proc=mesh.proc).decode()
    assert "Book Details" in html and "PublisherA" in html
    assert "Book Reviews" in html and "Reviewer1" in html

    # productpage takes reviews v1, v2, v3 in turn: three requests show all three versions.
    with httpx.Client(trust_env=False, timeout=10) as http:
        pages = [http.get(mesh.url).text for _ in range(3)]
    served_by = {re.search(r'class="served-by">([^<]+)<', p).group(1) for p in pages}
    assert served_by == {"reviews-v1", "reviews-v2", "reviews-v3"}
    assert any('color="black"' in p for p in pages) and any('color="red"' in p for p in pages)

    pids = mesh.child_pids()
    assert set(pids) == {"productpage", "details", "reviews-v1", "reviews-v2", "reviews-v3", "ratings"}
    assert all(alive(pid) for pid in pids.values())

    mesh.proc.send_signal(signal.SIGINT)
    assert mesh.proc.wait(30) == 0
    left = {name: pid for name, pid in pids.items() if alive(pid) or group_alive(pid)}
    assert left == {}, f"still running after Ctrl-C: {left}"
    stopped = re.findall(r"event=process\.stopped workload=(\S+)", mesh.output())
    assert stopped[0] == "productpage" and stopped[-1] in {"ratings", "details"} and len(stopped) == 6


def test_crashed_process_is_restarted_then_sigterm_stops_all(procs):
    mesh = start(procs, "127.0.0.60")
    mesh.wait_for_output(r"Bookinfo is up")
    old = mesh.child_pids()["details"]
    os.kill(old, signal.SIGKILL)
    mesh.wait_for_output(rf"event=process\.crashed workload=details pid={old} code=-9 .*restart_in_s=0\.5")
    new = int(mesh.wait_for_output(r"event=process\.restarted workload=details pid=(\d+)").group(1))
    mesh.wait_for_output(rf"event=process\.ready workload=details pid={new}")
    assert new != old and alive(new)
    assert "Book Details" in wait_for_http(mesh.url, proc=mesh.proc).decode()

    pids = mesh.child_pids()
    assert pids["details"] == new
    mesh.proc.send_signal(signal.SIGTERM)
    assert mesh.proc.wait(30) == 0
    assert [name for name, pid in pids.items() if alive(pid) or group_alive(pid)] == []


def test_port_in_use_names_address_and_port_and_exits_non_zero(procs):
    base = "127.0.0.70"
    details = str(ipaddress.IPv4Address(base) + BOOKINFO_SLOTS.index("details"))
    port = free_port_on_all([str(ipaddress.IPv4Address(base) + i) for i in range(len(BOOKINFO_SLOTS))])
    with socket.socket() as blocker:  # something else already has details' address and port
        blocker.bind((details, port))
        blocker.listen()
        mesh = start(procs, base, port)
        assert mesh.proc.wait(60) != 0
    out = mesh.output()
    assert f"cannot listen on {mesh.address('details')}:{mesh.port}: Address already in use" in out
    assert "details exited with status 1 before it was ready" in out
    pids = mesh.child_pids()
    assert "details" in pids and "productpage" not in pids  # dependents were never started
    assert [name for name, pid in pids.items() if alive(pid) or group_alive(pid)] == []
