"""Transparent mode's network plan (pure: no I/O).

A plan turns a list of workloads into everything the runner (`netns_runner.py`) has to do, as data:

* one network namespace per workload, named ``<prefix><run id>-<workload>`` (run id: 6 hex digits, so
  two runs never collide and a crash's leftovers are recognisable by the prefix);
* a hub namespace ``<prefix><run id>`` holding a Linux bridge ``<prefix><run id>-br`` with 198.18.0.1/24.
  The bridge lives in its own namespace, not the host's, so the host's routing table is never touched,
  two runs can both use 198.18.0.0/24, and nothing sent on the bridge can leave it (the hub forwards
  nowhere);
* one veth pair per workload: ``<prefix><run id>-v<nn>`` on the bridge, ``eth0`` in the workload, with
  198.18.0.<n>/24, loopback up and a default route via the bridge;
* ``/etc/netns/<ns>/hosts`` (which ``ip netns exec`` mounts over /etc/hosts) naming every service
  short, ``<svc>.<k8s namespace>``, ``<svc>.<k8s namespace>.svc`` and the FQDN
  ``<svc>.<k8s namespace>.svc.cluster.local``;
* for a workload with a sidecar, the nat rules istio-init writes (tools/istio-iptables): inbound TCP to
  ISTIO_INBOUND -> ISTIO_IN_REDIRECT (15006) except the proxy's own ports, outbound TCP to ISTIO_OUTPUT
  -> ISTIO_REDIRECT (15001) except the proxy's UID/GID and plain localhost traffic, and the proxy's
  calls to the pod's own address over lo sent back to inbound (Istio's "app calls itself" case).

Every address comes from 198.18.0.0/24 (RFC 2544 benchmarking space). A service served by one workload
resolves to that workload's address; one served by several gets a virtual address (like a ClusterIP)
that no interface holds, allocated from .254 downwards: only a sidecar that knows the service can
route it.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from dataclasses import dataclass, field

SUBNET = ipaddress.IPv4Network("198.18.0.0/24")
BRIDGE_IP = SUBNET.network_address + 1
DEFAULT_PREFIX = "isth-"
IFNAMSIZ = 15  # Linux interface names: at most 15 bytes
WORKLOAD_IFNAME = "eth0"
K8S_NAMESPACE = "default"
CLUSTER_DOMAIN = "cluster.local"
NETNS_DIR = "/etc/netns"

PROXY_UID = 1337
PROXY_GID = 1337
OUTBOUND_CAPTURE_PORT = 15001
INBOUND_CAPTURE_PORT = 15006
ADMIN_PORT = 15000
# Never captured inbound: Envoy admin, the capture ports themselves, the agent's status ports
# (15020 merged Prometheus/health, 15021 /healthz/ready) and Envoy's Prometheus port.
PROXY_PORTS = (15000, 15001, 15006, 15020, 15021, 15090)
# Istio's inbound passthrough binds its upstream connections to this address so they are not captured.
INBOUND_PASSTHROUGH_SOURCE = "127.0.0.6"
LOCALHOST = "127.0.0.1"

_LABEL = re.compile(r"^[a-z]([a-z0-9-]*[a-z0-9])?$")
_PREFIX = re.compile(r"^[a-z][a-z0-9]*-$")
_RUN_ID = re.compile(r"^[0-9a-f]{6}$")
MAX_PREFIX = IFNAMSIZ - len("000000-v00")  # so every interface name fits in IFNAMSIZ


class PlanError(ValueError):
    """A workload list or option that cannot be planned; the message names what is wrong."""


@dataclass(frozen=True)
class Workload:
    """One pod-like unit: an app and (when `sidecar`) its proxy, sharing one network namespace.

    `services` are the names it serves (default: its own name)."""

    name: str
    services: tuple[str, ...] = ()
    sidecar: bool = True

    def service_names(self) -> tuple[str, ...]:
        return self.services or (self.name,)


@dataclass(frozen=True)
class Capture:
    """istio-init's options, with Istio's defaults."""

    proxy_uid: int = PROXY_UID
    proxy_gid: int = PROXY_GID
    outbound_port: int = OUTBOUND_CAPTURE_PORT
    inbound_port: int = INBOUND_CAPTURE_PORT
    admin_port: int = ADMIN_PORT
    exclude_inbound_ports: tuple[int, ...] = PROXY_PORTS

    def excluded_inbound(self) -> tuple[int, ...]:
        """Ports never redirected inbound, in a stable order (the admin port included)."""
        ports: list[int] = []
        for port in (*self.exclude_inbound_ports, self.admin_port):
            if port not in ports:
                ports.append(port)
        return tuple(ports)


@dataclass(frozen=True)
class WorkloadNet:
    """Where one workload lives on the bridge."""

    workload: Workload
    netns: str
    ip: str
    bridge_port: str  # the veth end plugged into the bridge (in the hub namespace)
    ifname: str = WORKLOAD_IFNAME

    @property
    def name(self) -> str:
        return self.workload.name


@dataclass(frozen=True)
class Command:
    """One command the runner executes. `ignore_missing`: for teardown, "already gone" is success."""

    argv: tuple[str, ...]
    ignore_missing: bool = False
    stdin: str | None = None


@dataclass(frozen=True)
class MeshPlan:
    prefix: str
    run_id: str
    hub_netns: str
    bridge: str
    bridge_ip: str
    workloads: tuple[WorkloadNet, ...]
    service_addresses: dict[str, str] = field(default_factory=dict)
    capture: Capture = Capture()

    # -- lookups -------------------------------------------------------------------------------------
    def get(self, workload: str) -> WorkloadNet:
        for w in self.workloads:
            if w.name == workload:
                return w
        raise KeyError(f"no workload {workload!r} in this plan (have {[w.name for w in self.workloads]})")

    def netns_names(self) -> list[str]:
        """Every namespace this plan creates, the hub first."""
        return [self.hub_netns, *(w.netns for w in self.workloads)]

    # -- what to create ------------------------------------------------------------------------------
    def hosts_file(self) -> str:
        return hosts_file(self.service_addresses)

    def hosts_files(self) -> dict[str, str]:
        """Path -> contents for each workload namespace (`ip netns exec` mounts it over /etc/hosts)."""
        text = self.hosts_file()
        return {f"{NETNS_DIR}/{w.netns}/hosts": text for w in self.workloads}

    def setup_commands(self) -> list[Command]:
        hub = self.hub_netns
        cmds = [
            Command(("ip", "netns", "add", hub)),
            Command(("ip", "-n", hub, "link", "set", "lo", "up")),
            Command(("ip", "-n", hub, "link", "add", self.bridge, "type", "bridge")),
            Command(
                ("ip", "-n", hub, "addr", "add", f"{self.bridge_ip}/{SUBNET.prefixlen}", "dev", self.bridge)
            ),
            Command(("ip", "-n", hub, "link", "set", self.bridge, "up")),
        ]
        for w in self.workloads:
            cmds += workload_commands(w, hub, self.bridge, self.bridge_ip)
            if w.workload.sidecar:
                cmds.append(
                    Command(
                        ("ip", "netns", "exec", w.netns, "iptables-restore", "--noflush"),
                        stdin=iptables_restore_text(istio_init_rules(w.ip, self.capture)),
                    )
                )
        return cmds

    def teardown_commands(self) -> list[Command]:
        """Deleting a namespace removes its interfaces (a veth pair goes with either end) and its
        iptables rules; the hub takes the bridge with it. Workloads first, the hub last."""
        return [
            Command(("ip", "netns", "del", ns), ignore_missing=True)
            for ns in [*(w.netns for w in self.workloads), self.hub_netns]
        ]


# -- naming and validation --------------------------------------------------------------------------


def new_run_id() -> str:
    return secrets.token_hex(3)


def check_prefix(prefix: str) -> str:
    if not _PREFIX.match(prefix) or len(prefix) > MAX_PREFIX:
        raise PlanError(
            f"prefix {prefix!r}: expected a lowercase letter, then letters/digits, ending in '-', "
            f"at most {MAX_PREFIX} characters (interface names are limited to {IFNAMSIZ})"
        )
    return prefix


def check_name(kind: str, name: str) -> str:
    if not _LABEL.match(name) or len(name) > 63:
        raise PlanError(
            f"{kind} name {name!r}: expected a DNS label (lowercase letters, digits and '-', "
            "starting with a letter, at most 63 characters)"
        )
    return name


def workload_commands(w: WorkloadNet, hub: str, bridge: str, gateway: str) -> list[Command]:
    ns = w.netns
    return [
        Command(("ip", "netns", "add", ns)),
        Command(("ip", "-n", ns, "link", "set", "lo", "up")),
        # Both ends are created where they belong: no interface of ours ever appears in the host.
        Command(
            (
                "ip",
                "-n",
                hub,
                "link",
                "add",
                w.bridge_port,
                "type",
                "veth",
                "peer",
                "name",
                w.ifname,
                "netns",
                ns,
            )
        ),
        Command(("ip", "-n", hub, "link", "set", w.bridge_port, "master", bridge)),
        Command(("ip", "-n", hub, "link", "set", w.bridge_port, "up")),
        Command(("ip", "-n", ns, "addr", "add", f"{w.ip}/{SUBNET.prefixlen}", "dev", w.ifname)),
        Command(("ip", "-n", ns, "link", "set", w.ifname, "up")),
        Command(("ip", "-n", ns, "route", "add", "default", "via", gateway, "dev", w.ifname)),
    ]


def plan_mesh(
    workloads: list[Workload] | tuple[Workload, ...],
    prefix: str = DEFAULT_PREFIX,
    run_id: str | None = None,
    capture: Capture | None = None,
) -> MeshPlan:
    """The whole plan for `workloads`; PlanError names the first problem."""
    check_prefix(prefix)
    run_id = new_run_id() if run_id is None else run_id
    if not _RUN_ID.match(run_id):
        raise PlanError(f"run id {run_id!r}: expected 6 lowercase hex digits")
    if not workloads:
        raise PlanError("no workloads to plan")
    capture = capture or Capture()
    check_capture(capture)

    seen: set[str] = set()
    for wl in workloads:
        check_name("workload", wl.name)
        if wl.name in seen:
            raise PlanError(f"workload {wl.name!r} appears twice")
        seen.add(wl.name)
        for svc in wl.service_names():
            check_name(f"service (of workload {wl.name!r})", svc)

    hosts = list(SUBNET.hosts())  # .1 .. .254
    workload_ips = hosts[1:]  # .1 is the bridge
    if len(workloads) > len(workload_ips):
        raise PlanError(f"{len(workloads)} workloads do not fit in {SUBNET} ({len(workload_ips)} addresses)")
    base = f"{prefix}{run_id}"
    nets = []
    for wl, ip in zip(workloads, workload_ips, strict=False):
        octet = int(ip) & 0xFF
        nets.append(
            WorkloadNet(wl, netns=f"{base}-{wl.name}", ip=str(ip), bridge_port=f"{base}-v{octet:02x}")
        )

    # Services: one backend -> its address; several -> a virtual address from the top of the range.
    backends: dict[str, list[WorkloadNet]] = {}
    for n in nets:
        for svc in n.workload.service_names():
            backends.setdefault(svc, []).append(n)
    service_addresses: dict[str, str] = {}
    next_vip = len(hosts) - 1
    lowest_workload = len(nets)  # index in `hosts` of the last workload address
    for svc, members in backends.items():
        if len(members) == 1:
            service_addresses[svc] = members[0].ip
            continue
        if next_vip <= lowest_workload:
            raise PlanError(f"no address left in {SUBNET} for the virtual address of service {svc!r}")
        service_addresses[svc] = str(hosts[next_vip])
        next_vip -= 1

    plan = MeshPlan(
        prefix=prefix,
        run_id=run_id,
        hub_netns=base,
        bridge=f"{base}-br",
        bridge_ip=str(BRIDGE_IP),
        workloads=tuple(nets),
        service_addresses=service_addresses,
        capture=capture,
    )
    for name in [plan.bridge, *(n.bridge_port for n in nets)]:
        assert len(name) <= IFNAMSIZ, name  # guaranteed by check_prefix
    for addr in [plan.bridge_ip, *(n.ip for n in nets), *service_addresses.values()]:
        assert ipaddress.IPv4Address(addr) in SUBNET, addr
    return plan


def check_capture(c: Capture) -> None:
    for label, value, top in (("proxy_uid", c.proxy_uid, 2**32 - 2), ("proxy_gid", c.proxy_gid, 2**32 - 2)):
        if not 1 <= value <= top:
            raise PlanError(f"capture.{label} {value}: expected a non-root id (1..{top})")
    for label, port in (
        ("outbound_port", c.outbound_port),
        ("inbound_port", c.inbound_port),
        ("admin_port", c.admin_port),
        *(("exclude_inbound_ports", p) for p in c.exclude_inbound_ports),
    ):
        if not 1 <= port <= 65535:
            raise PlanError(f"capture.{label} {port}: expected a port between 1 and 65535")
    if c.outbound_port == c.inbound_port:
        raise PlanError("capture.outbound_port and capture.inbound_port must differ")
    excluded = c.excluded_inbound()
    if len(excluded) > 15:  # iptables' multiport match takes at most 15 ports
        raise PlanError(
            f"capture.exclude_inbound_ports: at most 15 ports (with the admin port), got {len(excluded)}"
        )
    if c.inbound_port not in excluded:
        # A connection made to the inbound port itself would be redirected to itself forever.
        raise PlanError(f"capture.exclude_inbound_ports must include the inbound port {c.inbound_port}")


# -- hosts ------------------------------------------------------------------------------------------


def service_hostnames(service: str, namespace: str = K8S_NAMESPACE) -> list[str]:
    return [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.{CLUSTER_DOMAIN}",
    ]


def hosts_file(service_addresses: dict[str, str]) -> str:
    lines = [
        "# written by isthmus (transparent mode); removed with its namespace",
        f"{LOCALHOST}\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
    ]
    for svc in sorted(service_addresses):
        lines.append(f"{service_addresses[svc]}\t{' '.join(service_hostnames(svc))}")
    return "\n".join(lines) + "\n"


# -- istio-init -------------------------------------------------------------------------------------


def istio_init_rules(pod_ip: str, capture: Capture | None = None) -> list[str]:
    """The nat table rules istio-init (REDIRECT mode, inbound ports "*") writes for a pod, in
    iptables-save form, in the order they are applied. `pod_ip` is only used for validation: like
    istio-init, the rules match on interfaces and owners, not on the pod's address."""
    c = capture or Capture()
    if ipaddress.IPv4Address(pod_ip) not in SUBNET:
        raise PlanError(f"pod address {pod_ip} is outside {SUBNET}")
    uid, gid = str(c.proxy_uid), str(c.proxy_gid)
    rules = [
        "-N ISTIO_INBOUND",
        "-N ISTIO_REDIRECT",
        "-N ISTIO_IN_REDIRECT",
        "-N ISTIO_OUTPUT",
        f"-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports {c.outbound_port}",
        f"-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports {c.inbound_port}",
        # Inbound: everything TCP arriving, except the proxy's own ports.
        "-A PREROUTING -p tcp -j ISTIO_INBOUND",
        *(f"-A ISTIO_INBOUND -p tcp --dport {port} -j RETURN" for port in c.excluded_inbound()),
        "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT",
        # Outbound: everything TCP the pod sends, except ...
        "-A OUTPUT -p tcp -j ISTIO_OUTPUT",
        # ... the inbound passthrough's connections to the app (bound to 127.0.0.6),
        f"-A ISTIO_OUTPUT -o lo -s {INBOUND_PASSTHROUGH_SOURCE}/32 -j RETURN",
        # ... connections over lo to the ports never captured inbound (the agent's calls to its proxy's
        # admin on the pod IP: redirected to 15006 they would die with the inbound listener on drain),
        "-A ISTIO_OUTPUT -o lo -p tcp -m multiport --dports "
        + ",".join(str(p) for p in c.excluded_inbound())
        + " -j RETURN",
    ]
    for flag, ident in (("--uid-owner", uid), ("--gid-owner", gid)):
        rules += [
            # the proxy calling the pod's own non-localhost address over lo: that is inbound traffic,
            f"-A ISTIO_OUTPUT -o lo ! -d {LOCALHOST}/32 -m owner {flag} {ident} -j ISTIO_IN_REDIRECT",
            # the app talking to itself over lo (localhost or its own address): left alone,
            f"-A ISTIO_OUTPUT -o lo -m owner ! {flag} {ident} -j RETURN",
            # the proxy's own outbound connections: never captured (else they loop back into it),
            f"-A ISTIO_OUTPUT -m owner {flag} {ident} -j RETURN",
        ]
    rules += [
        f"-A ISTIO_OUTPUT -d {LOCALHOST}/32 -j RETURN",
        "-A ISTIO_OUTPUT -j ISTIO_REDIRECT",
    ]
    return rules


def iptables_restore_text(rules: list[str], table: str = "nat") -> str:
    """Input for `iptables-restore --noflush`: applied atomically, all or nothing (as istio-init does)."""
    return "\n".join([f"*{table}", *rules, "COMMIT"]) + "\n"


# -- leftovers after a crash ------------------------------------------------------------------------


def ours(name: str, prefix: str) -> bool:
    """True for a namespace, link or /etc/netns entry one of our runs made with `prefix`:
    `<prefix><6 hex>` or `<prefix><6 hex>-...`."""
    if not name.startswith(prefix):
        return False
    rest = name[len(prefix) :]
    return bool(_RUN_ID.match(rest[:6])) and (len(rest) == 6 or rest[6] == "-")


def leftovers(prefix: str, netns: list[str], links: list[str], netns_dirs: list[str]) -> dict[str, list[str]]:
    """What `isthmus netns cleanup` deletes: only names that `ours()` recognises."""
    check_prefix(prefix)
    return {
        "netns": sorted(n for n in netns if ours(n, prefix)),
        "links": sorted(n for n in links if ours(n, prefix)),
        "netns_dirs": sorted(n for n in netns_dirs if ours(n, prefix)),
    }


def of_run(found: dict[str, list[str]], prefix: str, run_id: str) -> dict[str, list[str]]:
    """The part of `leftovers()` that belongs to one run: `<prefix><run id>` and `<prefix><run id>-...`
    (what `isthmus down` removes for the run its state file names; other runs are left alone)."""
    check_prefix(prefix)
    if not _RUN_ID.match(run_id):
        raise PlanError(f"run id {run_id!r}: expected 6 hex digits")
    base = f"{prefix}{run_id}"
    return {
        kind: [n for n in names if n == base or n.startswith(base + "-")] for kind, names in found.items()
    }
