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

    def argv(self, python: str = "python") -> list[str]:
        return [python, "-m", self.module]

    def url(self, path: str = "/") -> str:
        host = "127.0.0.1" if self.address == "0.0.0.0" else self.address
        return f"http://{host}:{self.port}{path}"

    @property
    def ready_url(self) -> str:
        return self.url(self.ready_path)


@dataclass(frozen=True)
class Topology:
    workloads: tuple[Workload, ...]
    entry: str
    entry_path: str = "/"

    def get(self, name: str) -> Workload:
        for w in self.workloads:
            if w.name == name:
                return w
        raise KeyError(name)

    @property
    def entry_url(self) -> str:
        return self.get(self.entry).url(self.entry_path)

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
