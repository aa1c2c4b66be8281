"""Transparent mode in real network namespaces (needs root): istio-init's rules capture a plain client's
call by name to the client's sidecar (15001), across the bridge into the server's sidecar (15006) and on
to the app; the proxies' own traffic (UID 1337) is never captured; and every namespace, veth, bridge and
/etc/netns dir is gone afterwards, after a failure, a SIGTERM, or (via `isthmus netns cleanup`) a
SIGKILL. Traffic stays in 198.18.0.0/24 and the namespaces' own loopback.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from isthmus.launcher.netns import NETNS_DIR
from tests.integration.proxy.harness import admin_block, static_cluster
from tests.support.processes import REPO
from tests.support.transparent import TransparentMesh, transparent_mesh  # noqa: F401 (fixture)

pytestmark = pytest.mark.netns

APP_PORT = 9080
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
ODST = "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst"
TCP = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
STDOUT_LOG = "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"
LOG_FORMAT = (
    "ACCESS %REQ(:PATH)% %RESPONSE_CODE% %UPSTREAM_CLUSTER% %UPSTREAM_HOST% %DOWNSTREAM_LOCAL_ADDRESS%\n"
)
INBOUND_CLUSTER = f"inbound|{APP_PORT}||"


def hcm(stat_prefix: str, cluster: str) -> dict:
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": HCM,
            "stat_prefix": stat_prefix,
            "route_config": {
                "name": stat_prefix,
                "virtual_hosts": [
                    {
                        "name": "all",
                        "domains": ["*"],
                        "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}],
                    }
                ],
            },
            "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}],
            "access_log": [
                {
                    "name": "envoy.access_loggers.stdout",
                    "typed_config": {
                        "@type": STDOUT_LOG,
                        "log_format": {"text_format_source": {"inline_string": LOG_FORMAT}},
                    },
                }
            ],
        },
    }


def inbound_bootstrap() -> dict:
    """Istio's virtualInbound: everything redirected to 15006 goes to the local app."""
    return {
        "admin": admin_block(15000),
        "static_resources": {
            "listeners": [
                {
                    "name": "virtualInbound",
                    "address": {"socket_address": {"address": "0.0.0.0", "port_value": 15006}},
                    "listener_filters": [
                        {"name": "envoy.filters.listener.original_dst", "typed_config": {"@type": ODST}}
                    ],
                    "filter_chains": [{"filters": [hcm("inbound_capture", INBOUND_CLUSTER)]}],
                }
            ],
            "clusters": [static_cluster(INBOUND_CLUSTER, [APP_PORT], host="127.0.0.1")],
        },
    }


def outbound_bootstrap() -> dict:
    """Istio's virtualOutbound: everything redirected to 15001 passes through to where it was going."""
    blackhole = {"name": "envoy.filters.network.tcp_proxy", "typed_config": {"@type": TCP, "stat_prefix": "BlackHoleCluster", "cluster": "BlackHoleCluster"}}  # fmt: skip
    return {
        "admin": admin_block(15000),
        "static_resources": {
            "listeners": [
                {
                    "name": "virtualOutbound",
                    "address": {"socket_address": {"address": "0.0.0.0", "port_value": 15001}},
                    "use_original_dst": True,
                    "listener_filters": [
                        {"name": "envoy.filters.listener.original_dst", "typed_config": {"@type": ODST}}
                    ],
                    "filter_chains": [
                        # A connection to 15001 itself (a readiness probe) must not loop back to 15001.
                        {"filter_chain_match": {"destination_port": 15001}, "filters": [blackhole]},
                        {"filters": [hcm("outbound_capture", "PassthroughCluster")]},
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "PassthroughCluster",
                    "type": "ORIGINAL_DST",
                    "lb_policy": "CLUSTER_PROVIDED",
                    "connect_timeout": "2s",
                },
                {"name": "BlackHoleCluster", "type": "STATIC", "connect_timeout": "1s"},
            ],
        },
    }


def wait_for_access_log(mesh: TransparentMesh, proc, needle: str, timeout: float = 10) -> str:
    """The proxy's access log is flushed on a timer: poll its output for the line."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [
            line for line in mesh.output(proc).splitlines() if line.startswith("ACCESS ") and needle in line
        ]
        if lines:
            return lines[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"no access-log line with {needle!r}:\n{mesh.output(proc)}")
        time.sleep(0.1)


def test_a_plain_call_by_name_goes_through_both_sidecars_and_the_proxies_are_not_captured(
    transparent_mesh,  # noqa: F811 (the fixture imported above)
):
    mesh = transparent_mesh(["client", "server"])
    server_ip = mesh.ip("server")
    assert server_ip.startswith("198.18.0.")

    app = mesh.popen(
        "server",
        [sys.executable, "-m", "tests.support.upstream_app", "--host", "0.0.0.0", "--port", str(APP_PORT), "--name", "server-app"],
    )  # fmt: skip
    mesh.wait_for_port("server", "127.0.0.1", APP_PORT, proc=app)
    server_proxy = mesh.popen(
        "server",
        [sys.executable, "-m", "proxy", "-c", str(mesh.write_file(yaml.safe_dump(inbound_bootstrap())))],
        uid=mesh.proxy_uid,
    )
    client_proxy = mesh.popen(
        "client",
        [sys.executable, "-m", "proxy", "-c", str(mesh.write_file(yaml.safe_dump(outbound_bootstrap())))],
        uid=mesh.proxy_uid,
    )
    mesh.wait_for_port("server", "127.0.0.1", 15006, proc=server_proxy)
    mesh.wait_for_port("client", "127.0.0.1", 15001, proc=client_proxy)

    # The app in "client" knows nothing of the mesh: it calls the service by name, no proxy settings.
    status, body = mesh.http_get("client", f"http://server:{APP_PORT}/hello")
    assert status == 200, body
    seen = json.loads(body)
    assert seen["upstream"] == "server-app" and seen["path"] == "/hello"
    assert seen["count"] == 1  # exactly one request reached the app: nothing looped
    assert seen["headers"]["host"] == f"server:{APP_PORT}"
    assert "x-request-id" in seen["headers"], seen["headers"]  # set by the sidecars' HCM

    client = mesh.admin_stats("client")
    server = mesh.admin_stats("server")
    # Once through the client's 15001 and out of its passthrough; a captured proxy connection would
    # have come back to 15001 and counted again (or looped until the timeout).
    assert client["http.outbound_capture.downstream_rq_total"] == 1
    assert client["cluster.PassthroughCluster.upstream_rq_total"] == 1
    # Once through the server's 15006 and on to the app over localhost (not captured again).
    assert server["http.inbound_capture.downstream_rq_total"] == 1
    assert server[f"cluster.{INBOUND_CLUSTER}.upstream_rq_total"] == 1
    out_line = wait_for_access_log(mesh, client_proxy, "/hello")
    assert out_line.split()[1:] == [
        "/hello",
        "200",
        "PassthroughCluster",
        f"{server_ip}:{APP_PORT}",
        f"{server_ip}:{APP_PORT}",
    ]
    in_line = wait_for_access_log(mesh, server_proxy, "/hello")
    assert in_line.split()[1:] == [
        "/hello",
        "200",
        INBOUND_CLUSTER,
        f"127.0.0.1:{APP_PORT}",
        f"{server_ip}:{APP_PORT}",
    ]

    # UID 1337 is excluded outbound: the same call made as the proxy's user bypasses the client's
    # sidecar, but it is still captured inbound by the server's.
    status, body = mesh.http_get(
        "client", f"http://server.default.svc.cluster.local:{APP_PORT}/as-proxy", uid=mesh.proxy_uid
    )
    assert status == 200 and json.loads(body)["path"] == "/as-proxy"
    assert mesh.admin_stats("client")["http.outbound_capture.downstream_rq_total"] == 1
    assert mesh.admin_stats("server")["http.inbound_capture.downstream_rq_total"] == 2

    # The app calling itself on localhost is left alone.
    status, body = mesh.http_get("server", f"http://127.0.0.1:{APP_PORT}/self")
    assert status == 200 and json.loads(body)["count"] == 3
    assert mesh.admin_stats("server")["http.inbound_capture.downstream_rq_total"] == 2

    base = mesh.plan.hub_netns
    mesh.teardown()
    assert mesh.leftovers() == []
    assert app.poll() is not None and server_proxy.poll() is not None and client_proxy.poll() is not None
    assert base not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert base not in subprocess.run(["ip", "link"], capture_output=True, text=True).stdout


def test_teardown_after_a_failure_inside_the_block_still_removes_everything():
    mesh = TransparentMesh(["alpha", "beta"])
    base = mesh.plan.hub_netns
    with pytest.raises(RuntimeError, match="the test failed"):
        with mesh:
            sleeper = mesh.popen("alpha", ["sleep", "600"])
            assert Path(NETNS_DIR, mesh.netns("beta"), "hosts").exists()
            assert sorted(mesh.leftovers()) == sorted(
                [base, *[mesh.netns("alpha"), mesh.netns("beta")] * 2]
            )  # namespaces + hosts dirs
            raise RuntimeError("the test failed")
    assert sleeper.poll() is not None
    assert mesh.leftovers() == []
    assert not Path(NETNS_DIR, mesh.netns("beta")).exists()
    assert base not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert mesh.teardown() == []  # twice is fine


RUN_MESH = """
import signal, sys
from isthmus.launcher.netns import Workload, plan_mesh
from isthmus.launcher.netns_runner import NetnsMesh
mesh = NetnsMesh(plan_mesh([Workload("a"), Workload("b")], prefix=sys.argv[1])).apply()
print(mesh.plan.hub_netns, flush=True)
signal.pause()
"""


def start_mesh_process(prefix: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", RUN_MESH, prefix],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        start_new_session=True,
    )
    base = proc.stdout.readline().strip()
    assert base.startswith(prefix), base
    return proc, base


def present(base: str) -> list[str]:
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    dirs = [p.name for p in Path(NETNS_DIR).iterdir()] if Path(NETNS_DIR).is_dir() else []
    return [n for n in names + dirs if n == base or n.startswith(base + "-")]


def test_sigterm_to_the_process_that_made_the_mesh_removes_it():
    proc, base = start_mesh_process("istt-")
    try:
        assert len(present(base)) == 5  # hub + 2 namespaces + 2 hosts dirs
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == -signal.SIGTERM  # it still dies of the signal
        assert present(base) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        proc.stdout.close()


def test_isthmus_netns_cleanup_removes_what_a_killed_run_left():
    # A prefix no other test uses: cleanup deletes everything carrying it.
    proc, base = start_mesh_process("iscl-")
    proc.kill()  # SIGKILL: no handler runs, everything stays behind
    proc.wait(10)
    proc.stdout.close()
    try:
        assert len(present(base)) == 5
        result = subprocess.run(
            [sys.executable, "-m", "isthmus", "netns", "cleanup", "--prefix", "iscl-"],
            capture_output=True, text=True, cwd=REPO, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert f"deleting namespace {base}" in result.stdout
        assert present(base) == []
        again = subprocess.run(
            [sys.executable, "-m", "isthmus", "netns", "cleanup", "--prefix", "iscl-"],
            capture_output=True, text=True, cwd=REPO, timeout=60,
        )  # fmt: skip
        assert again.returncode == 0 and "nothing to clean up" in again.stdout
    finally:
        for ns in present(base):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
