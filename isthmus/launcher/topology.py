"""What `isthmus up` runs: processes, addresses, ports, environment, dependencies, readiness (pure).

The same description drives the local supervisor and docker-compose.yml (a test keeps the two in
step). Only the addressing differs: locally each workload gets its own loopback address, so every
workload can use the same port, as in Kubernetes; in Compose each service is found by its name.

Without a mesh nothing balances between reviews v1, v2 and v3, so productpage is given all three
(REVIEWS_HOSTNAME is a comma-separated list) and takes them in turn. When the sidecars arrive,
productpage will be given the service name `reviews` and its sidecar will do the balancing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

APP_PORT = 9080
DEFAULT_ADDRESS_BASE = "127.0.0.10"


@dataclass(frozen=True)
class Workload:
    """One process: `python -m <module>` listening on address:port, ready when ready_path answers 200."""

    name: str
    module: str
    address: str
    port: int
    env: Mapping[str, str] = field(default_factory=dict)
    depends_on: tuple[str, ...] = ()
    ready_path: str = "/health"
    args: tuple[str, ...] = ()
    # readiness answered somewhere else than address:port (an agent's status port, a gateway route)
    ready: str | None = None
    # (namespace, service account, file): a citadel bootstrap token to write before the process starts
    token: tuple[str, str, str] | None = None
    # what the command runs under (transparent mode: `ip netns exec <ns> [setpriv ...]`)
    wrap: tuple[str, ...] = ()

    def argv(self, python: str = "python") -> list[str]:
        return [*self.wrap, python, "-m", self.module, *self.args]

    def url(self, path: str = "/") -> str:
        host = "127.0.0.1" if self.address == "0.0.0.0" else self.address
        return f"http://{host}:{self.port}{path}"

    @property
    def ready_url(self) -> str:
        return self.ready or self.url(self.ready_path)


@dataclass(frozen=True)
class Topology:
    workloads: tuple[Workload, ...]
    entry: str
    entry_path: str = "/"
    # what `isthmus up` prints once everything is ready (None: the apps-only banner)
    banner: str | None = None

    def get(self, name: str) -> Workload:
        for w in self.workloads:
            if w.name == name:
                return w
        raise KeyError(name)

    @property
    def entry_url(self) -> str:
        entry = self.get(self.entry)
        return (
            entry.ready
            if entry.ready and entry.ready.endswith(self.entry_path)
            else entry.url(self.entry_path)
        )

    def start_order(self) -> list[Workload]:
        """Dependencies first; otherwise in declaration order. Raises ValueError on cycles or unknown names."""
        by_name = {w.name: w for w in self.workloads}
        for w in self.workloads:
            for dep in w.depends_on:
                if dep not in by_name:
                    raise ValueError(f"{w.name} depends on unknown workload {dep!r}")
        ordered: list[Workload] = []
        done: set[str] = set()
        visiting: set[str] = set()

        def visit(w: Workload) -> None:
            if w.name in done:
                return
            if w.name in visiting:
                raise ValueError(f"dependency cycle through {w.name!r}")
            visiting.add(w.name)
            for dep in w.depends_on:
                visit(by_name[dep])
            visiting.discard(w.name)
            done.add(w.name)
            ordered.append(w)

        for w in self.workloads:
            visit(w)
        return ordered


# Bookinfo's workloads, in the order of their local address slots (base, base+1, ...).
BOOKINFO_SLOTS = ("productpage", "details", "reviews-v1", "reviews-v2", "reviews-v3", "ratings")


@dataclass(frozen=True)
class Addressing:
    """How workloads find and bind: `host(name)` to reach a workload, `listen(name)` to bind."""

    host: Callable[[str], str]
    listen: Callable[[str], str]


def local_addressing(address_base: str = DEFAULT_ADDRESS_BASE) -> Addressing:
    """Workload i of BOOKINFO_SLOTS on address_base + i, all inside 127.0.0.0/8."""
    base = parse_address_base(address_base)

    def addr(name: str) -> str:
        return str(base + BOOKINFO_SLOTS.index(name))

    return Addressing(host=addr, listen=addr)


def compose_addressing() -> Addressing:
    return Addressing(host=lambda name: name, listen=lambda name: "0.0.0.0")


def parse_address_base(text: str) -> ipaddress.IPv4Address:
    """A loopback IPv4 address with room for every Bookinfo slot after it; ValueError otherwise."""
    try:
        base = ipaddress.IPv4Address(text)
    except ValueError:
        raise ValueError(f"not an IPv4 address: {text!r}") from None
    last = int(base) + len(BOOKINFO_SLOTS) - 1
    loopback = ipaddress.IPv4Network("127.0.0.0/8")
    if base not in loopback or ipaddress.IPv4Address(last) not in loopback or int(base) & 0xFF == 0:
        raise ValueError(
            f"{text} must be in 127.0.0.0/8 with {len(BOOKINFO_SLOTS)} addresses free "
            f"after it (e.g. {DEFAULT_ADDRESS_BASE})"
        )
    return base


def bookinfo(addressing: Addressing | None = None, port: int = APP_PORT) -> Topology:
    """Istio's Bookinfo without sidecars: every workload on `port`, on the addresses `addressing` gives."""
    a = addressing or local_addressing()

    def workload(
        name: str, module: str, version: str, extra_env: dict[str, str], depends_on: tuple[str, ...] = ()
    ) -> Workload:
        env = {
            "LISTEN_ADDRESS": a.listen(name),
            "LISTEN_PORT": str(port),
            "SERVICE_VERSION": version,
            "HOSTNAME": name,
            **extra_env,
        }
        return Workload(
            name=name, module=module, address=a.listen(name), port=port, env=env, depends_on=depends_on
        )

    ratings_env = {"RATINGS_HOSTNAME": a.host("ratings"), "RATINGS_SERVICE_PORT": str(port)}
    reviews = ("reviews-v1", "reviews-v2", "reviews-v3")
    return Topology(
        workloads=(
            workload("ratings", "bookinfo.ratings", "v1", {}),
            workload("details", "bookinfo.details", "v1", {}),
            workload("reviews-v1", "bookinfo.reviews", "v1", ratings_env),
            workload("reviews-v2", "bookinfo.reviews", "v2", ratings_env, ("ratings",)),
            workload("reviews-v3", "bookinfo.reviews", "v3", ratings_env, ("ratings",)),
            workload(
                "productpage",
                "bookinfo.productpage",
                "v1",
                {
                    "DETAILS_HOSTNAME": a.host("details"),
                    "DETAILS_SERVICE_PORT": str(port),
                    "REVIEWS_HOSTNAME": ",".join(a.host(r) for r in reviews),
                    "REVIEWS_SERVICE_PORT": str(port),
                    **ratings_env,
                },
                ("details", *reviews),
            ),
        ),
        entry="productpage",
        entry_path="/productpage",
    )


# ------------------------------------------------------------------------------------ the whole mesh

DEFAULT_CONTROL_ADDRESS = "127.0.0.1"
NAMESPACE = "default"
GATEWAY_PORT = 8080  # bookinfo-gateway.yaml's server port
CITADEL_PORTS = {"grpc": 8060, "http": 8061, "mtls": 8062}
PILOT_PORTS = {"grpc": 15010, "http": 15014}
MIXER_PORTS = {"grpc": 9091, "http": 20001}
AGENT_STATUS_PORT = 15021
SIDECAR_OUTBOUND_PORT = 15001

# workload name -> (service, version); Istio's Bookinfo service accounts are bookinfo-<service>
BOOKINFO_WORKLOADS = {
    "productpage": ("productpage", "v1"),
    "details": ("details", "v1"),
    "reviews-v1": ("reviews", "v1"),
    "reviews-v2": ("reviews", "v2"),
    "reviews-v3": ("reviews", "v3"),
    "ratings": ("ratings", "v1"),
}


@dataclass(frozen=True)
class MeshOptions:
    """Where the mesh runs. Paths are where `isthmus up` keeps its state (made by the caller)."""

    state_dir: str
    address_base: str = DEFAULT_ADDRESS_BASE
    control_address: str = DEFAULT_CONTROL_ADDRESS  # citadel, pilot, mixer and the gateway
    port: int = APP_PORT
    redis_url: str | None = None
    drain: str = "2s"
    xds_type: str = "sotw"

    @property
    def config_dir(self) -> str:
        return f"{self.state_dir}/config"

    @property
    def config_store(self) -> str:
        """Where pilot keeps config applied with `isthmus apply` across its restarts."""
        return f"{self.state_dir}/pilot-store"

    @property
    def citadel_root(self) -> str:
        return f"{self.state_dir}/citadel"

    def proxy_dir(self, name: str) -> str:
        return f"{self.state_dir}/proxies/{name}"

    @property
    def pilot_url(self) -> str:
        return f"http://{self.control_address}:{PILOT_PORTS['http']}"

    @property
    def dashboard_url(self) -> str:
        return f"http://{self.control_address}:{MIXER_PORTS['http']}/"

    @property
    def gateway_url(self) -> str:
        return f"http://{self.control_address}:{GATEWAY_PORT}/productpage"


def _check_address(flag: str, text: str) -> None:
    try:
        ip = ipaddress.IPv4Address(text)
    except ValueError:
        raise ValueError(f"{flag}: not an IPv4 address: {text!r}") from None
    if ip not in ipaddress.IPv4Network("127.0.0.0/8"):
        raise ValueError(f"{flag}: {text} is not a loopback address (127.0.0.0/8)")


APP_ADDRESS_OFFSET = 256  # 127.0.0.10 -> 127.0.1.10


def app_address(workload_ip: str) -> str:
    """The app's private address behind its sidecar in local mode: the workload IP + 256 (127.0.0.<n> ->
    127.0.1.<n>). The sidecar binds <workload ip>:<port> (mTLS, telemetry) and forwards to the app here."""
    ip = ipaddress.IPv4Address(workload_ip) + APP_ADDRESS_OFFSET
    if ip not in ipaddress.IPv4Network("127.0.0.0/8"):
        raise ValueError(f"{workload_ip}: no room for the app's private address {ip} in 127.0.0.0/8")
    return str(ip)


CONTROL_PLACE = "control"  # where citadel, pilot and mixer run
GATEWAY = "istio-ingressgateway"


@dataclass(frozen=True)
class Placement:
    """Where the mesh's processes run and how they reach each other; `mesh()` describes the same
    processes in either mode.

    Local mode (``local_placement``): everything on the host, each workload on its own loopback
    address, each app on a private address behind its sidecar, calling out through it as HTTP proxy.
    Transparent mode (``isthmus.launcher.transparent``): each place in its own network namespace;
    apps call by name with no proxy settings and istio-init's rules capture their traffic.

    `control_ip`: citadel, pilot and mixer bind it and everyone dials it. `workload_ip(name)`: a
    Bookinfo workload's IP (its sidecar's --ip and pilot's registry). `gateway_ip`: the gateway's --ip.
    `reach(place)`: the host address through which the supervisor checks a place's readiness and the
    user reaches it (place: CONTROL_PLACE, GATEWAY or a Bookinfo workload). `wrap(place, as_proxy)`:
    the argv prefix that runs a command there (as the proxy's identity when `as_proxy`)."""

    control_ip: str
    gateway_ip: str
    workload_ip: Callable[[str], str]
    reach: Callable[[str], str]
    wrap: Callable[[str, bool], tuple[str, ...]] = lambda place, as_proxy: ()
    transparent: bool = False


def local_placement(options: MeshOptions) -> Placement:
    _check_address("--control-address", options.control_address)
    a = local_addressing(options.address_base)
    cp = options.control_address

    def reach(place: str) -> str:
        return cp if place in (CONTROL_PLACE, GATEWAY) else a.listen(place)

    return Placement(control_ip=cp, gateway_ip=cp, workload_ip=a.listen, reach=reach)


def mesh_services_yaml(addressing: Addressing, port: int = APP_PORT, namespace: str = NAMESPACE) -> str:
    """Bookinfo's services for pilot: a ServiceEntry per service (the Kubernetes Service's host name,
    MESH_INTERNAL, STATIC, selecting its WorkloadEntries by app label) and a WorkloadEntry per workload
    (its address, app/version labels, service account). The address is the workload's sidecar (local
    mode: it binds <ip>:<port> and forwards to the app's private address), so auto mTLS applies."""
    docs = []
    for service in sorted({s for s, _ in BOOKINFO_WORKLOADS.values()}):
        docs.append(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n"
            f"  name: {service}\n  namespace: {namespace}\nspec:\n"
            f"  hosts: [{service}.{namespace}.svc.cluster.local]\n  location: MESH_INTERNAL\n"
            "  resolution: STATIC\n"
            f"  ports:\n  - {{number: {port}, name: http, protocol: HTTP}}\n"
            f"  workloadSelector:\n    labels: {{app: {service}}}\n"
        )
    for name, (service, version) in BOOKINFO_WORKLOADS.items():
        docs.append(
            "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n"
            f"  name: {name}\n  namespace: {namespace}\nspec:\n  address: {addressing.host(name)}\n"
            f"  labels: {{app: {service}, version: {version}}}\n"
            f"  serviceAccount: bookinfo-{service}\n"
        )
    return "---\n".join(docs)


def mesh(options: MeshOptions, placement: Placement | None = None) -> Topology:
    """The whole mesh: citadel, pilot, mixer; per Bookinfo workload its agent (which runs its sidecar)
    and then the app (Istio's holdApplicationUntilProxyStarts); the ingress gateway last. Local mode
    (the default placement): each app listens on its private address (``app_address``) behind its
    sidecar, which owns the workload IP's service port. Transparent mode: app and sidecar share the
    workload's network namespace and istio-init's rules send traffic through the sidecar. Stopping runs
    this backwards: gateway, apps, sidecars (drained), control plane."""
    _check_address("--control-address", options.control_address)
    p = placement or local_placement(options)
    cp = p.control_ip
    o = options
    citadel_root = o.citadel_root
    control_at = p.reach(CONTROL_PLACE)
    control_wrap = p.wrap(CONTROL_PLACE, False)
    citadel = Workload(
        name="citadel",
        module="citadel",
        address=control_at,
        port=CITADEL_PORTS["http"],
        ready_path="/ready",
        wrap=control_wrap,
        args=(
            "--root-dir", citadel_root,
            "--grpc-addr", f"{cp}:{CITADEL_PORTS['grpc']}",
            "--http-addr", f"{cp}:{CITADEL_PORTS['http']}",
            "--grpc-mtls-addr", f"{cp}:{CITADEL_PORTS['mtls']}",
            "--server-ips", cp,
        ),
    )  # fmt: skip
    pilot = Workload(
        name="pilot",
        module="pilot",
        address=control_at,
        port=PILOT_PORTS["http"],
        ready_path="/ready",
        wrap=control_wrap,
        args=(
            "--config-dir", o.config_dir,
            "--config-store", o.config_store,
            "--grpc-addr", f"{cp}:{PILOT_PORTS['grpc']}",
            "--http-addr", f"{cp}:{PILOT_PORTS['http']}",
            # Sidecars and the gateway report telemetry to mixer and honour CUSTOM policies.
            "--mixer-address", f"{cp}:{MIXER_PORTS['grpc']}",
        ),
    )  # fmt: skip
    mixer_args = ["--grpc-addr", f"{cp}:{MIXER_PORTS['grpc']}", "--http-addr", f"{cp}:{MIXER_PORTS['http']}"]
    if o.redis_url:
        mixer_args += ["--redis-url", o.redis_url]
    mixer = Workload(
        name="mixer", module="mixer", address=control_at, port=MIXER_PORTS["http"], ready_path="/ready",
        wrap=control_wrap, args=tuple(mixer_args),
    )  # fmt: skip
    control = ("citadel", "pilot", "mixer")
    interception = "REDIRECT" if p.transparent else "NONE"

    def agent(
        name: str,
        ip: str,
        namespace: str,
        sa: str,
        labels: dict[str, str],
        *extra: str,
        after=(),
        as_proxy: bool = True,
    ) -> Workload:
        d = o.proxy_dir(name)
        label_args = [x for k, v in labels.items() for x in ("--label", f"{k}={v}")]
        return Workload(
            name=f"{name}-sidecar" if "--type" not in extra else name,
            module="proxy.agent",
            address=p.reach(name),
            port=AGENT_STATUS_PORT,
            ready_path="/healthz/ready",
            depends_on=(*control, *after),
            token=(namespace, sa, f"{d}/token"),
            wrap=p.wrap(name, as_proxy),
            # transparent mode: the agent runs as the proxy's user, whose home is its own directory
            env={"HOME": d} if p.transparent else {},
            args=(
                "--citadel", f"{cp}:{CITADEL_PORTS['grpc']}",
                "--citadel-mtls", f"{cp}:{CITADEL_PORTS['mtls']}",
                "--root-cert", f"{citadel_root}/root-cert.pem",
                "--token-file", f"{d}/token",
                "--sds-socket", f"{d}/SDS",
                "--bootstrap", f"{d}/envoy-rev.json",
                "--namespace", namespace, "--service-account", sa,
                "--name", name, "--ip", ip, *label_args,
                "--discovery-address", f"{cp}:{PILOT_PORTS['grpc']}",
                "--xds-type", o.xds_type,
                "--interception-mode", interception if "--type" not in extra else "NONE",
                "--drain-duration", o.drain,
                *extra,
            ),
        )  # fmt: skip

    sidecars, apps = [], []
    port = str(o.port)
    for name, (service, version) in BOOKINFO_WORKLOADS.items():
        ip = p.workload_ip(name)
        labels = {"app": service, "version": version}
        env = {"LISTEN_PORT": port, "SERVICE_VERSION": version, "HOSTNAME": name}
        if p.transparent:
            # app and sidecar share the namespace: the app listens on every address, calls out with no
            # proxy settings, and istio-init's rules capture both directions
            sidecar = agent(name, ip, NAMESPACE, f"bookinfo-{service}", labels)
            listen, env["LISTEN_ADDRESS"] = p.reach(name), "0.0.0.0"
        else:
            private = app_address(ip)
            sidecar = agent(name, ip, NAMESPACE, f"bookinfo-{service}", labels, "--app-address", private)
            listen, env["LISTEN_ADDRESS"] = private, private
            env["HTTP_PROXY"] = f"http://{ip}:{SIDECAR_OUTBOUND_PORT}"
        sidecars.append(sidecar)
        if service == "productpage":
            for upstream in ("details", "reviews", "ratings"):
                env[f"{upstream.upper()}_HOSTNAME"] = upstream
                env[f"{upstream.upper()}_SERVICE_PORT"] = port
        elif service == "reviews":
            env.update({"RATINGS_HOSTNAME": "ratings", "RATINGS_SERVICE_PORT": port})
        apps.append(
            Workload(
                name=name,
                module=f"bookinfo.{service}",
                address=listen,
                port=o.port,
                env=env,
                depends_on=(sidecar.name,),
                wrap=p.wrap(name, False),
            )
        )
    gateway = agent(
        GATEWAY,
        p.gateway_ip,
        "istio-system",
        "istio-ingressgateway-service-account",
        {"istio": "ingressgateway", "app": "istio-ingressgateway"},
        "--type", "router",
        after=tuple(w.name for w in apps),
        as_proxy=False,
    )  # fmt: skip
    # ready once the gateway routes to productpage (bookinfo-gateway.yaml), not only when it is LIVE
    gateway = Workload(**{**gateway.__dict__, "ready": o.gateway_url})
    pilot_flag = "" if o.control_address == DEFAULT_CONTROL_ADDRESS else f" --pilot {o.pilot_url}"
    banner = (
        f"\nThe mesh is up{' (transparent mode)' if p.transparent else ''}. Open {o.gateway_url}\n"
        f"  dashboard:   {o.dashboard_url}\n"
        f"  apply Istio config, e.g.\n"
        f"    isthmus apply -f ../shared/istio-samples/bookinfo/networking/virtual-service-reviews-v3.yaml"
        + pilot_flag
        + "\n"
        "  sync status: isthmus proxy-status" + pilot_flag + "\n"
    )
    return Topology(
        workloads=(citadel, pilot, mixer, *sidecars, *apps, gateway),
        entry=gateway.name,
        entry_path="/productpage",
        banner=banner,
    )
