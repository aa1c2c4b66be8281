"""mixer is still a scaffold: it serves a real /ready and /metrics, and stops cleanly. (pilot and citadel
have their own integration tests now.)"""

import signal
import urllib.error
import urllib.request

import pytest

from tests.support.net import free_port, wait_for_http


@pytest.mark.parametrize("component", ["mixer"])
def test_ready_and_metrics(procs, component):
    port = free_port("127.0.0.1")
    proc = procs.python("-m", component, "--http-addr", f"127.0.0.1:{port}")
    assert wait_for_http(f"http://127.0.0.1:{port}/ready", proc=proc) == b"ready\n"
    metrics = wait_for_http(f"http://127.0.0.1:{port}/metrics", proc=proc).decode()
    assert f'isthmus_component_info{{component="{component}"}} 1.0' in metrics
    assert "process_cpu_seconds_total" in metrics
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/no-such-page", timeout=5)
    assert missing.value.code == 404
    assert procs.stop(proc, signal.SIGTERM) == 0
    out = procs.output(proc)
    assert "event=scaffold.not_implemented" in out and "event=server.stopped" in out
