"""A state dir deeper than a Unix socket address allows (107 bytes): the agent still serves SDS and its
proxy still gets the workload certificate.

The natural socket, `<state dir>/proxies/<name>/SDS`, cannot be bound there (gRPC: "Path name should not
have more than 107 characters"). The agent serves it under a shorter name and writes that name into the
proxy's bootstrap: relative to the working directory when that is short enough, else in a private 0700
directory under /tmp linked from the natural path, removed when the agent stops.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from tests.integration.proxy.test_agent_supervision import config_dump, get, mesh, workload_ip  # noqa: F401
from tests.support.net import wait_for_http
from tests.support.processes import REPO


def deep_state_dir(root: Path) -> Path:
    d = root / ("deep-clone-" + "x" * 50) / ("nested-" + "y" * 50) / "state"
    assert len(os.fsencode(str(d / "proxies/reviews-v1/SDS"))) > 107
    return d


def start_agent(procs, state: Path, cwd: Path, citadel, pilot) -> tuple:
    ip = workload_ip()
    d = state / "proxies" / "reviews-v1"
    d.mkdir(parents=True)
    (d / "token").write_text(citadel.token("default", "reviews"))
    proc = procs.python(
        "-m", "proxy.agent", "--citadel", f"127.0.0.1:{citadel.grpc_port}",
        "--citadel-mtls", f"127.0.0.1:{citadel.mtls_port}",
        "--root-cert", str(citadel.root_dir / "root-cert.pem"), "--token-file", str(d / "token"),
        "--sds-socket", str(d / "SDS"), "--bootstrap", str(d / "envoy-rev.json"),
        "--namespace", "default", "--service-account", "reviews", "--name", "reviews-v1", "--ip", ip,
        "--label", "app=reviews", "--service", "reviews", "--service-ports", "http:9080",
        "--discovery-address", pilot.grpc, "--drain-duration", "1s", "--cert-ttl", "1h",
        cwd=cwd, env={"PYTHONPATH": str(REPO), "XDG_RUNTIME_DIR": ""},
    )  # fmt: skip
    wait_for_http(f"http://{ip}:15021/healthz/ready", timeout=60, proc=proc)
    return proc, ip, d


@pytest.mark.parametrize("where", ["private", "relative"])
def test_a_sidecar_under_a_state_dir_longer_than_a_socket_path_gets_its_certificate(
    procs,
    tmp_path,
    mesh,  # noqa: F811
    where,  # noqa: F811
):
    citadel, pilot = mesh
    state = deep_state_dir(tmp_path)
    # "relative": run from the clone (the state dir is below it); "private": from /, far from it
    cwd = state.parent if where == "relative" else Path("/")
    proc, ip, d = start_agent(procs, state, cwd, citadel, pilot)
    status = json.loads(get(f"http://{ip}:15021/status")[1])
    assert status["cert_version"] >= 1

    dump = config_dump(type("A", (), {"admin": f"http://{ip}:15000"})())
    pipe = next(
        c["cluster"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["pipe"][
            "path"
        ]
        for c in dump["ClustersConfigDump"]["static_clusters"]
        if c["cluster"]["name"] == "sds-grpc"
    )
    assert len(os.fsencode(pipe)) <= 107
    if where == "relative":
        assert pipe == "state/proxies/reviews-v1/SDS" and stat.S_ISSOCK(os.lstat(d / "SDS").st_mode)
    else:
        assert pipe.startswith("/tmp/isthmus-sds-") and os.readlink(d / "SDS") == pipe
        assert stat.S_IMODE(os.stat(Path(pipe).parent).st_mode) == 0o700
    # the proxy has the certificate the agent holds, over SDS through that socket
    secrets = {s["name"]: s for s in dump["SecretsConfigDump"].get("dynamic_active_secrets", [])}
    assert {"default", "ROOTCA"} <= set(secrets)
    assert secrets["default"]["version_info"] == str(status["cert_version"])

    assert procs.stop(proc, timeout=30) == 0, procs.output(proc)
    assert not os.path.lexists(d / "SDS")
    if where == "private":
        assert not os.path.exists(Path(pipe).parent)
