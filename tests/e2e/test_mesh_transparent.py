"""The whole mesh in transparent mode (needs root), as a root user runs it: `isthmus up --transparent`
puts the control plane, the gateway and each Bookinfo workload (app + agent + sidecar) in its own
network namespace on a bridge (198.18.0.0/24) behind istio-init's rules; the apps call
http://reviews:9080 etc. with no proxy settings. Then the same checks and Istio Bookinfo tasks as
local mode (tests/e2e/bookinfo_tasks.py), applied verbatim with `isthmus apply -f`, and Ctrl-C, after
which no namespace, /etc/netns dir or process of the run is left.

The gateway URL, pilot and the dashboard are reached from the host on a random 127.X.Y.0/24 block
(portmap forwards them into the namespaces), each proxy's admin on its workload's local-mode address.
One mesh serves the whole module; the fixture removes every namespace of the run afterwards, pass or
fail, and fails if it had to.
"""

from __future__ import annotations

import ipaddress
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from isthmus.launcher import state
from isthmus.launcher.netns import NETNS_DIR, SUBNET
from isthmus.launcher.netns_runner import list_leftovers, remove_leftovers
from tests.e2e import bookinfo_tasks
from tests.support.mesh import SAMPLES, Mesh, eventually, free_block

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"needs Istio's samples in {SAMPLES}"),
]

PREFIX = "isth-"
RUN = re.compile(r"netns (isth-[0-9a-f]{6})-control ")
APPS = ("productpage", "details", "reviews-v1", "reviews-v2", "reviews-v3", "ratings")


class TransparentMesh(Mesh):
    """`isthmus up --transparent` on a free loopback block, with its own --state-dir."""

    def __init__(self, tmp: Path) -> None:  # noqa: D107 (Mesh's attributes, another command line)
        self.control, self.base = free_block()
        self.state_dir = tmp / "state"
        self.log = tmp / "up.log"
        self._log = open(self.log, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "isthmus", "up", "--transparent", "--address-base", self.base,
             "--control-address", self.control, "--state-dir", str(self.state_dir), "--color", "never",
             "--drain", "1s", "--ready-timeout", "120"],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=tmp,
        )  # fmt: skip
        self.gateway = f"http://{self.control}:8080/productpage"
        self.pilot = f"http://{self.control}:15014"
        self.http = httpx.Client(trust_env=False, timeout=30)
        self.up: state.UpState | None = None
        self.run_base = ""  # isth-<run id>, from the banner

    def wait_up(self, timeout: float = 240) -> state.UpState:
        st = super().wait_up(timeout)
        m = RUN.search(self.output())
        assert m, f"no namespace list in the banner:\n{self.output()[-3000:]}"
        self.run_base = m.group(1)
        return st

    def leftovers(self) -> list[str]:
        """This run's namespaces, links and /etc/netns dirs still present ([] once stopped)."""
        if not self.run_base:  # not up (yet): anything of ours that appeared is this run's
            found = list_leftovers(PREFIX, netns_dir=NETNS_DIR)
            return [n for names in found.values() for n in names]
        found = list_leftovers(PREFIX, netns_dir=NETNS_DIR)
        base = self.run_base
        return [n for names in found.values() for n in names if n == base or n.startswith(base + "-")]

    def remove_leftovers(self) -> None:
        base = self.run_base
        found = list_leftovers(PREFIX, netns_dir=NETNS_DIR)
        if base:
            found = {k: [n for n in v if n == base or n.startswith(base + "-")] for k, v in found.items()}
        remove_leftovers(found, netns_dir=NETNS_DIR)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    before = set(list_leftovers(PREFIX, netns_dir=NETNS_DIR)["netns"])
    m = TransparentMesh(tmp_path_factory.mktemp("tmesh"))
    left: list[str] = []
    try:
        m.up = m.wait_up()
        yield m
    finally:
        m.stop()
        m.kill_leftovers()
        if m.run_base:
            left = m.leftovers()
        else:  # it never came up: whatever namespaces of ours appeared meanwhile are its
            left = sorted(set(list_leftovers(PREFIX, netns_dir=NETNS_DIR)["netns"]) - before)
        if left:
            if not m.run_base:
                remove_leftovers({"netns": left, "links": [], "netns_dirs": left}, netns_dir=NETNS_DIR)
            else:
                m.remove_leftovers()
    assert left == [], f"isthmus up --transparent left these behind: {left}"


@pytest.fixture
def applied(mesh):
    with bookinfo_tasks.applying(mesh) as apply:
        yield apply


def test_gateway_to_productpage_details_reviews_ratings_captured_by_the_sidecars(mesh):
    bookinfo_tasks.gateway_reaches_productpage_details_reviews_ratings(mesh)
    # each app runs in its own namespace with no proxy settings, and finds its peers by name
    run = mesh.run_base
    for app in APPS:
        environ = Path(f"/proc/{mesh.up.children[app]}/environ").read_bytes().split(b"\0")
        assert not [v for v in environ if v.lower().startswith((b"http_proxy=", b"https_proxy="))], app
        netns = Path(f"/proc/{mesh.up.children[app]}/ns/net")
        assert netns.stat().st_ino != Path("/proc/self/ns/net").stat().st_ino, app
    hosts = Path(f"{NETNS_DIR}/{run}-productpage/hosts").read_text()
    assert re.search(r"^198\.18\.0\.\d+\treviews reviews\.default ", hosts, re.M), hosts
    # the apps' plain calls were captured: productpage's outbound (15001 -> the 9080 listener) and the
    # inbound side (15006) of details and ratings counted them
    pp, details, ratings = mesh.ip("productpage"), mesh.ip("details"), mesh.ip("ratings")
    assert mesh.stat(pp, "http.outbound_0.0.0.0_9080.downstream_rq_total") >= 60  # details + reviews
    assert mesh.stat(details, "http.inbound_0.0.0.0_9080.downstream_rq_total") >= 31
    assert mesh.stat(ratings, "http.inbound_0.0.0.0_9080.downstream_rq_total") >= 1


def test_every_sidecar_to_sidecar_hop_is_mtls_and_pilot_gives_pod_ips(mesh):
    for _ in range(10):
        assert "Book Reviews" in mesh.page()
    # the inbound capture listener (15006) of productpage (from the gateway), details, reviews-v3 and
    # ratings (from reviews v2/v3) took TLS handshakes: every hop between proxies is mTLS
    for app in ("productpage", "details", "reviews-v3", "ratings"):
        assert mesh.stat(mesh.ip(app), "listener.0.0.0.0_15006.ssl.handshake") > 0, app
    pp = mesh.ip("productpage")
    for service in ("details", "reviews"):
        assert mesh.stat(pp, f"cluster.outbound|9080||{service}.default.svc.cluster.local.ssl.handshake") > 0
    # pilot's registry: the pods' addresses on the bridge
    clusters = mesh.http.get(f"http://{pp}:15000/clusters").text
    reviews = re.escape("outbound|9080||reviews.default.svc.cluster.local")
    endpoints = set(re.findall(rf"^{reviews}::([\d.]+):9080::", clusters, re.M))
    assert len(endpoints) == 3 and all(ipaddress.IPv4Address(ip) in SUBNET for ip in endpoints), endpoints

    def edges() -> dict[tuple[str, str], dict]:
        graph = mesh.http.get(f"http://{mesh.control}:20001/api/graph", params={"window": 600}).json()
        return {
            (e["source"], e["target"]): e
            for e in graph["edges"]
            if e["reporter"] == "destination" and e["protocol"] == "http"
        }

    want = {
        ("default/productpage", "default/details"),
        *(("default/productpage", f"default/reviews-{v}") for v in ("v1", "v2", "v3")),
        ("default/reviews-v2", "default/ratings"),
        ("default/reviews-v3", "default/ratings"),
        ("istio-system/istio-ingressgateway", "default/productpage"),
    }

    def all_known_and_mtls() -> bool:
        got = edges()
        return want <= set(got) and all(got[k]["mtls"] for k in want)

    eventually(all_known_and_mtls, 30, "mixer's graph: not every edge known and mTLS")


def test_proxy_status_shows_every_proxy_synced(mesh):
    rows = mesh.proxy_status()
    expected = {f"{w}.default" for w in APPS} | {"istio-ingressgateway.istio-system"}
    assert set(rows) == expected, rows
    assert all(cols == ["SYNCED"] * 4 for cols in rows.values()), rows


@pytest.mark.parametrize("task", bookinfo_tasks.TASKS)
def test_bookinfo_task(mesh, applied, task):
    bookinfo_tasks.TASKS[task](mesh, applied)


def test_ctrl_c_removes_every_namespace_and_process(mesh):
    pids = mesh.up.children
    assert len(pids) == 17 and all(state.alive(p) for p in pids.values())  # portmap + local mode's 16
    assert len(mesh.leftovers()) >= 8  # hub + control + gateway + 6 workloads (+ /etc/netns dirs)
    mesh.proc.send_signal(signal.SIGINT)
    assert mesh.proc.wait(120) == 0, mesh.output()[-3000:]
    assert {n: p for n, p in pids.items() if state.alive(p)} == {}
    assert mesh.leftovers() == []
    stopped = re.findall(r"event=process\.stopped workload=(\S+) pid=\d+ code=(\S+)", mesh.output())
    assert [w for w, _ in stopped][-1] == "portmap"  # the door into the namespaces closes last
    assert "process.kill" not in mesh.output()  # every sidecar drained and stopped in time
