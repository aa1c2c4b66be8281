"""`isthmus up --transparent`: the same mesh as local mode (topology.mesh), each place in its own
network namespace (pure: the plan, the placement, the host forwards; netns_runner and portmap do I/O).

Places (netns.plan_mesh, addresses from 198.18.0.0/24 on a bridge in a hub namespace):

* ``control``: citadel, pilot and mixer, no sidecar;
* ``istio-ingressgateway``: the gateway (router mode), no capture, as Istio's gateway;
* each Bookinfo workload: its app (as root) and its agent + sidecar (UID/GID 1337, so istio-init's
  owner rules exclude the proxy), behind istio-init's nat rules. Apps call ``http://reviews:9080``
  with no proxy settings; names come from /etc/netns/<ns>/hosts. Pilot's registry has the pod IPs.

The host reaches the mesh through `portmap` (the first process to start, the last to stop): the
control plane's and the gateway's ports on --control-address (so the gateway URL, `isthmus apply`
and the dashboard are the same as in local mode), and each workload's app, admin and status ports
on its local-mode loopback address (address base + slot).
"""

from __future__ import annotations

import dataclasses
import sys

from isthmus.launcher.netns import DEFAULT_PREFIX, Capture, MeshPlan, Workload, plan_mesh
from isthmus.launcher.netns_runner import in_netns
from isthmus.launcher.portmap import Forward
from isthmus.launcher.topology import (
    AGENT_STATUS_PORT,
    BOOKINFO_WORKLOADS,
    CITADEL_PORTS,
    CONTROL_PLACE,
    GATEWAY,
    GATEWAY_PORT,
    MIXER_PORTS,
    PILOT_PORTS,
    Addressing,
    MeshOptions,
    Placement,
    Topology,
    local_addressing,
    mesh,
    mesh_services_yaml,
)
from isthmus.launcher.topology import Workload as Process

PORTMAP = "portmap"
PORTMAP_STATUS_PORT = 15099
ADMIN_PORT = 15000
# The interpreter may live where UID 1337 cannot look (e.g. under /root, mode 0700): the proxy's user
# keeps this one capability (read and search any file, nothing else), as in the netns integration test.
PROXY_CAPS = ("dac_read_search",)


def places() -> list[Workload]:
    """The namespaces of the mesh, control plane first; a Bookinfo workload serves its service."""
    return [
        Workload(CONTROL_PLACE, sidecar=False),
        Workload(GATEWAY, sidecar=False),
        *(Workload(name, services=(service,)) for name, (service, _) in BOOKINFO_WORKLOADS.items()),
    ]


def plan(prefix: str = DEFAULT_PREFIX, run_id: str | None = None, capture: Capture | None = None) -> MeshPlan:
    return plan_mesh(places(), prefix=prefix, run_id=run_id, capture=capture)


def placement(options: MeshOptions, net: MeshPlan) -> Placement:
    host = local_addressing(options.address_base)

    def reach(place: str) -> str:
        return options.control_address if place in (CONTROL_PLACE, GATEWAY) else host.host(place)

    def wrap(place: str, as_proxy: bool) -> tuple[str, ...]:
        ns = net.get(place).netns
        if not as_proxy:
            return tuple(in_netns(ns, []))
        c = net.capture
        return tuple(in_netns(ns, [], c.proxy_uid, c.proxy_gid, PROXY_CAPS))

    return Placement(
        control_ip=net.get(CONTROL_PLACE).ip,
        gateway_ip=net.get(GATEWAY).ip,
        workload_ip=lambda name: net.get(name).ip,
        reach=reach,
        wrap=wrap,
        transparent=True,
    )


def pod_addressing(net: MeshPlan) -> Addressing:
    """Pilot's registry in transparent mode: each WorkloadEntry has the pod IP."""
    return Addressing(host=lambda name: net.get(name).ip, listen=lambda name: net.get(name).ip)


def services_yaml(options: MeshOptions, net: MeshPlan) -> str:
    return mesh_services_yaml(pod_addressing(net), options.port)


def forwards(options: MeshOptions, net: MeshPlan) -> list[Forward]:
    """What the host reaches, and where it leads."""
    p = placement(options, net)
    out: list[Forward] = []

    def add(place: str, ports: list[int]) -> None:
        w = net.get(place)
        out.extend(Forward(p.reach(place), port, w.netns, w.ip, port) for port in ports)

    add(CONTROL_PLACE, [*CITADEL_PORTS.values(), *PILOT_PORTS.values(), *MIXER_PORTS.values()])
    add(GATEWAY, [GATEWAY_PORT, ADMIN_PORT, AGENT_STATUS_PORT])
    for name in BOOKINFO_WORKLOADS:
        add(name, [options.port, ADMIN_PORT, AGENT_STATUS_PORT])
    return out


def topology(options: MeshOptions, net: MeshPlan, python: str = sys.executable) -> Topology:
    """topology.mesh with the transparent placement, behind the host forwards: `portmap` starts first
    (every readiness check goes through it) and stops last."""
    t = mesh(options, placement(options, net))
    args = ["--status", f"{options.control_address}:{PORTMAP_STATUS_PORT}"]
    for f in forwards(options, net):
        args += ["--forward", f.spec()]
    portmap = Process(
        name=PORTMAP,
        module="isthmus.launcher.portmap",
        address=options.control_address,
        port=PORTMAP_STATUS_PORT,
        ready_path="/ready",
        args=tuple(args),
    )
    workloads = [dataclasses.replace(w, depends_on=(PORTMAP, *w.depends_on)) for w in t.workloads]
    banner = (t.banner or "") + "".join(f"  {w.name:<22} netns {w.netns:<34} {w.ip}\n" for w in net.workloads)
    return dataclasses.replace(t, workloads=(portmap, *workloads), banner=banner)
