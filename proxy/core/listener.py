"""Listeners: bind, accept, listener filters, filter-chain selection, hand-off and drain.

Each accepted socket becomes a ``DownstreamConnection`` (an ``asyncio.Protocol``). The listener
filters run first; bytes that arrive meanwhile are buffered and replayed to the terminal network
filter of the chosen filter chain. Filter-chain selection follows Envoy's order of precedence and,
like Envoy, never backtracks once a more specific value matched at some level.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2

from isthmus.log import event
from proxy.config.context import FactoryContext
from proxy.config.errors import ConfigError
from proxy.config.registry import LISTENER_FILTERS, NETWORK_FILTERS
from proxy.config.supported import reject_unsupported

log = logging.getLogger("proxy.listener")

DEFAULT_BUFFER_LIMIT = 1024 * 1024  # per_connection_buffer_limit_bytes default (1 MiB)
DEFAULT_LISTENER_FILTERS_TIMEOUT = 15.0  # Envoy's listener_filters_timeout default
DEFAULT_BACKLOG = 1024
SECRETS_WAIT_TIMEOUT = 15.0  # a connection on a TLS chain waits this long for SDS (initial_fetch_timeout)

FILTER_CHAIN_MATCH_SPEC = {
    "destination_port": True,
    "prefix_ranges": True,
    "server_names": True,
    "transport_protocol": True,
    "application_protocols": True,
    "direct_source_prefix_ranges": True,
    "source_type": True,
    "source_prefix_ranges": True,
    "source_ports": True,
}
FILTER_CHAIN_SPEC = {
    "name": True,
    "filter_chain_match": FILTER_CHAIN_MATCH_SPEC,
    "filters": {"name": True, "typed_config": True},
    "metadata": True,
    "transport_socket": True,  # checked by proxy.tls.transport_socket.build_transport_socket
}
LISTENER_SPEC = {
    "name": True,
    "address": {"socket_address": {"address": True, "port_value": True, "protocol": True}},
    "stat_prefix": True,
    "filter_chains": FILTER_CHAIN_SPEC,
    "default_filter_chain": FILTER_CHAIN_SPEC,
    "use_original_dst": True,
    "per_connection_buffer_limit_bytes": True,
    "metadata": True,
    "drain_type": True,
    "listener_filters": {"name": True, "typed_config": True},
    "listener_filters_timeout": True,
    "continue_on_listener_filters_timeout": True,
    "traffic_direction": True,
    "bind_to_port": True,
    "tcp_backlog_size": True,
}


# --------------------------------------------------------------------------------------------------
# Filter-chain selection (pure)
# --------------------------------------------------------------------------------------------------

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass
class ChainMatch:
    """A compiled ``FilterChainMatch``. Empty lists / 0 / "" mean "any"."""

    destination_port: int = 0
    prefix_ranges: list[Network] = field(default_factory=list)
    server_names: list[str] = field(default_factory=list)
    transport_protocol: str = ""
    application_protocols: list[str] = field(default_factory=list)
    direct_source_prefix_ranges: list[Network] = field(default_factory=list)
    source_type: int = 0  # 0 ANY, 1 SAME_IP_OR_LOOPBACK, 2 EXTERNAL
    source_prefix_ranges: list[Network] = field(default_factory=list)
    source_ports: list[int] = field(default_factory=list)

    def key(self) -> tuple:
        return (
            self.destination_port,
            tuple(sorted(map(str, self.prefix_ranges))),
            tuple(sorted(self.server_names)),
            self.transport_protocol,
            tuple(sorted(self.application_protocols)),
            tuple(sorted(map(str, self.direct_source_prefix_ranges))),
            self.source_type,
            tuple(sorted(map(str, self.source_prefix_ranges))),
            tuple(sorted(self.source_ports)),
        )


@dataclass
class ConnectionFacts:
    """What filter-chain matching looks at."""

    local_ip: str = "0.0.0.0"
    local_port: int = 0
    remote_ip: str = "0.0.0.0"
    remote_port: int = 0
    direct_remote_ip: str | None = None
    server_name: str = ""
    transport_protocol: str = "raw_buffer"
    application_protocols: list[str] = field(default_factory=list)


def _ip(text: str):
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _prefix_spec(ranges: list[Network], ip_text: str) -> int:
    """Longest matching prefix length; 0 for "any" (no ranges); -1 when no range matches."""
    if not ranges:
        return 0
    ip = _ip(ip_text)
    if ip is None:
        return -1
    best = -1
    for net in ranges:
        if ip.version == net.version and ip in net and net.prefixlen > best:
            best = net.prefixlen
    # A configured 0.0.0.0/0 is as specific as "any", so it gets 0 as well.
    return best


def _port_spec(port: int, want: int) -> int:
    if want == 0:
        return 0
    return 1 if port == want else -1


def _ports_spec(ports: list[int], want: int) -> int:
    if not ports:
        return 0
    return 1 if want in ports else -1


def _server_name_spec(names: list[str], sni: str) -> int:
    if not names:
        return 0
    if not sni:
        return -1
    sni = sni.lower()
    best = -1
    for name in names:
        name = name.lower()
        if name == sni:
            return 1 << 20
        if name.startswith("*.") and sni.endswith(name[1:]) and len(sni) > len(name) - 1:
            best = max(best, len(name))
        elif name.startswith(".") and sni.endswith(name):  # Envoy also accepts ".example.com"
            best = max(best, len(name))
    return best


def _alpn_spec(protocols: list[str], offered: list[str]) -> int:
    if not protocols:
        return 0
    n = len(offered)
    best = -1
    for i, p in enumerate(offered):
        if p in protocols:
            best = max(best, n - i)
    return best


def _is_local(facts: ConnectionFacts) -> bool:
    ip = _ip(facts.remote_ip)
    if ip is None:
        return False
    return ip.is_loopback or facts.remote_ip == facts.local_ip


def _source_type_spec(source_type: int, local: bool) -> int:
    if source_type == 0:
        return 0
    if source_type == 1:
        return 1 if local else -1
    return 1 if not local else -1


def select_filter_chain(chains: list[tuple[ChainMatch, Any]], facts: ConnectionFacts) -> Any | None:
    """Pick the chain for a connection in Envoy's order of precedence: destination port,
    destination IP, server name, transport protocol, application protocols, direct source IP, source
    type, source IP, source port. At each level only the chains with the most specific matching value
    go on; if none match at a level, there is no match (the caller then uses the default chain)."""
    local = _is_local(facts)
    direct_ip = facts.direct_remote_ip or facts.remote_ip
    levels = (
        lambda m: _port_spec(facts.local_port, m.destination_port),
        lambda m: _prefix_spec(m.prefix_ranges, facts.local_ip),
        lambda m: _server_name_spec(m.server_names, facts.server_name),
        lambda m: (
            0 if not m.transport_protocol else (1 if m.transport_protocol == facts.transport_protocol else -1)
        ),
        lambda m: _alpn_spec(m.application_protocols, facts.application_protocols),
        lambda m: _prefix_spec(m.direct_source_prefix_ranges, direct_ip),
        lambda m: _source_type_spec(m.source_type, local),
        lambda m: _prefix_spec(m.source_prefix_ranges, facts.remote_ip),
        lambda m: _ports_spec(m.source_ports, facts.remote_port),
    )
    candidates = chains
    for level in levels:
        best = -1
        kept: list[tuple[ChainMatch, Any]] = []
        for item in candidates:
            s = level(item[0])
            if s < 0:
                continue
            if s > best:
                best, kept = s, [item]
            elif s == best:
                kept.append(item)
        if not kept:
            return None
        candidates = kept
    return candidates[0][1]


def _cidrs(ranges, path: str) -> list[Network]:
    out = []
    for i, r in enumerate(ranges):
        plen = r.prefix_len.value if r.HasField("prefix_len") else None
        try:
            ip = ipaddress.ip_address(r.address_prefix)
            if plen is None:
                plen = ip.max_prefixlen
            out.append(ipaddress.ip_network(f"{r.address_prefix}/{plen}", strict=False))
        except ValueError as e:
            raise ConfigError(f"{path}[{i}]", f"invalid CIDR range: {e}") from None
    return out


def compile_chain_match(m: listener_components_pb2.FilterChainMatch, path: str) -> ChainMatch:
    reject_unsupported(m, FILTER_CHAIN_MATCH_SPEC, path)
    for i, name in enumerate(m.server_names):
        if "*" in name and not name.startswith("*."):
            raise ConfigError(
                f"{path}.server_names[{i}]", f"server name '{name}' has a wildcard that is not a '*.' prefix"
            )
    return ChainMatch(
        destination_port=m.destination_port.value if m.HasField("destination_port") else 0,
        prefix_ranges=_cidrs(m.prefix_ranges, f"{path}.prefix_ranges"),
        server_names=list(m.server_names),
        transport_protocol=m.transport_protocol,
        application_protocols=list(m.application_protocols),
        direct_source_prefix_ranges=_cidrs(
            m.direct_source_prefix_ranges, f"{path}.direct_source_prefix_ranges"
        ),
        source_type=int(m.source_type),
        source_prefix_ranges=_cidrs(m.source_prefix_ranges, f"{path}.source_prefix_ranges"),
        source_ports=list(m.source_ports),
    )


# --------------------------------------------------------------------------------------------------
# Compiled listener config
# --------------------------------------------------------------------------------------------------


@dataclass
class FilterChain:
    name: str
    proto: listener_components_pb2.FilterChain
    factory: Any  # NetworkFilterFactory of the terminal filter
    transport_socket: Any = None  # proxy.tls.transport_socket.TlsSocketFactory; None: plaintext


def _duration(d) -> float:
    return d.seconds + d.nanos / 1e9


def stat_address(host: str, port: int) -> str:
    """Envoy's listener stat name for an address: ``127.0.0.1_8080``, ``[::]_80`` → ``[__]_80``."""
    if ":" in host:
        host = f"[{host}]".replace(":", "_")
    return f"{host}_{port}"


class Listener:
    """One configured listener: its compiled chains, filters, socket and live connections."""

    def __init__(self, proto: listener_pb2.Listener, ctx: FactoryContext, path: str) -> None:
        reject_unsupported(proto, LISTENER_SPEC, path)
        self.proto = proto
        self.path = path
        if not proto.HasField("address") or not proto.address.HasField("socket_address"):
            raise ConfigError(f"{path}.address", "a listener needs a socket_address")
        sa = proto.address.socket_address
        if sa.protocol != address_pb2.SocketAddress.TCP:
            raise ConfigError(f"{path}.address.socket_address.protocol", "only TCP listeners are supported")
        self.host = sa.address or "0.0.0.0"
        if _ip(self.host) is None:
            raise ConfigError(
                f"{path}.address.socket_address.address", f"'{sa.address}' is not an IP address"
            )
        self.port = sa.port_value
        self.name = proto.name or f"{self.host}:{self.port}"
        self.address_str = f"{self.host}:{self.port}"
        self.ctx = FactoryContext(
            stats=ctx.stats,
            cluster_manager=ctx.cluster_manager,
            server=ctx.server,
            listener_name=self.name,
            extra=dict(ctx.extra),
        )
        prefix = proto.stat_prefix or stat_address(self.host, self.port)
        self.stats = ctx.stats.scope(f"listener.{prefix}.")
        self.cx_total = self.stats.counter("downstream_cx_total")
        self.cx_active = self.stats.gauge("downstream_cx_active")
        self.cx_destroy = self.stats.counter("downstream_cx_destroy")
        self.cx_length = self.stats.histogram("downstream_cx_length_ms")
        self.no_chain = self.stats.counter("no_filter_chain_match")
        self.pre_cx_active = self.stats.gauge("downstream_pre_cx_active")
        self.pre_cx_timeout = self.stats.counter("downstream_pre_cx_timeout")
        self.lf_error = self.stats.counter("downstream_listener_filter_error")
        self.buffer_limit = (
            proto.per_connection_buffer_limit_bytes.value
            if proto.HasField("per_connection_buffer_limit_bytes")
            else DEFAULT_BUFFER_LIMIT
        )
        self.filters_timeout = (
            _duration(proto.listener_filters_timeout)
            if proto.HasField("listener_filters_timeout")
            else DEFAULT_LISTENER_FILTERS_TIMEOUT
        )
        self.continue_on_timeout = proto.continue_on_listener_filters_timeout
        self.use_original_dst = proto.use_original_dst.value if proto.HasField("use_original_dst") else False
        self.bind_to_port = proto.bind_to_port.value if proto.HasField("bind_to_port") else True
        self.backlog = proto.tcp_backlog_size.value if proto.HasField("tcp_backlog_size") else DEFAULT_BACKLOG

        self.listener_filters = []
        for i, lf in enumerate(proto.listener_filters):
            lpath = f"{path}.listener_filters[{i}]"
            ext, msg = LISTENER_FILTERS.resolve(
                lf.name, lf.typed_config if lf.HasField("typed_config") else None, lpath
            )
            self.listener_filters.append(ext.factory(msg, self.ctx, f"{lpath}.typed_config"))
        if self.use_original_dst:  # Envoy adds the original_dst listener filter itself for use_original_dst
            from proxy.filters.listener.original_dst import OriginalDstFactory

            if not any(isinstance(f, OriginalDstFactory) for f in self.listener_filters):
                self.listener_filters.insert(0, OriginalDstFactory())

        self.chains: list[tuple[ChainMatch, FilterChain]] = []
        seen: dict[tuple, int] = {}
        for i, fc in enumerate(proto.filter_chains):
            cpath = f"{path}.filter_chains[{i}]"
            match = compile_chain_match(fc.filter_chain_match, f"{cpath}.filter_chain_match")
            key = match.key()
            if key in seen:
                raise ConfigError(
                    f"{cpath}.filter_chain_match",
                    f"multiple filter chains with the same matching rules are defined "
                    f"(same as filter_chains[{seen[key]}])",
                )
            seen[key] = i
            self.chains.append((match, self._build_chain(fc, cpath, i)))
        self.default_chain = None
        if proto.HasField("default_filter_chain"):
            dpath = f"{path}.default_filter_chain"
            if proto.default_filter_chain.HasField("filter_chain_match"):
                raise ConfigError(f"{dpath}.filter_chain_match", "the default filter chain has no match")
            self.default_chain = self._build_chain(proto.default_filter_chain, dpath, -1)
        if not self.chains and self.default_chain is None:
            raise ConfigError(f"{path}.filter_chains", "a listener needs at least one filter chain")

        self.server: asyncio.AbstractServer | None = None
        self.sock: socket.socket | None = None
        self.acceptor: Acceptor | None = None  # what the listening socket hands connections to
        self.connections: set[DownstreamConnection] = set()
        self.draining = False
        self.manager: ListenerManager | None = None
        # Set for listeners from LDS (admin config dump); rds_names: the RDS route configs it uses.
        self.dynamic = False
        self.version_info = ""
        self.last_updated = 0.0
        self.rds_names: set[str] = set()

    def _build_chain(self, fc: listener_components_pb2.FilterChain, path: str, index: int) -> FilterChain:
        reject_unsupported(fc, FILTER_CHAIN_SPEC, path)
        if not fc.filters:
            raise ConfigError(f"{path}.filters", "a filter chain needs a terminal network filter")
        # Non-terminal (read) filters first, the terminal one last (proxy.filters.network.read_filters).
        from proxy.filters.network.read_filters import GuardedFilterFactory, is_terminal

        factories = []
        for i, f in enumerate(fc.filters):
            fpath = f"{path}.filters[{i}]"
            ext, msg = NETWORK_FILTERS.resolve(
                f.name, f.typed_config if f.HasField("typed_config") else None, fpath
            )
            made = ext.factory(msg, self.ctx, f"{fpath}.typed_config")
            last = i == len(fc.filters) - 1
            if is_terminal(made) != last:
                why = "must be the last network filter" if not last else "is not terminal; the last must be"
                raise ConfigError(fpath, f"'{f.name}' {why} (http_connection_manager or tcp_proxy)")
            factories.append(made)
        *readers, factory = factories
        if readers:
            factory = GuardedFilterFactory(readers, factory)
        ts = None
        if fc.HasField("transport_socket"):
            from proxy.tls.transport_socket import build_transport_socket

            ts = build_transport_socket(
                fc.transport_socket, self.ctx, f"{path}.transport_socket", upstream=False
            )
        name = fc.name or (f"filter_chain_{index}" if index >= 0 else "default")
        return FilterChain(name, fc, factory, ts)

    def tls_factories(self) -> list:
        """The TLS socket factories of this listener's chains (warming waits for their secrets)."""
        chains = [c for _, c in self.chains] + ([self.default_chain] if self.default_chain else [])
        return [c.transport_socket for c in chains if c.transport_socket is not None]

    def find_chain(self, facts: ConnectionFacts) -> FilterChain | None:
        chain = select_filter_chain(self.chains, facts) if self.chains else None
        return chain if chain is not None else self.default_chain

    # ---- socket --------------------------------------------------------------------------------

    def bind(self) -> None:
        """Create and bind the socket now, so that "address in use" fails startup with its address."""
        if not self.bind_to_port:
            return
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        # --concurrency N (proxy.workers): "worker" binds with SO_REUSEPORT and listens (the kernel
        # spreads connections over the workers); "reserve" (the main process) binds without
        # listening, holding the address so a port in use still fails, and never accepts.
        mode = self.ctx.extra.get("listen_mode")
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if mode is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((self.host, self.port))
            if mode != "reserve":
                sock.listen(self.backlog)
            sock.setblocking(False)
        except OSError as e:
            sock.close()
            raise OSError(
                e.errno, f"cannot bind listener '{self.name}' to {self.address_str}: {e.strerror or e}"
            ) from None
        self.sock = sock
        if self.port == 0:
            self.port = sock.getsockname()[1]

    async def start(self) -> None:
        if self.sock is None or self.server is not None or self.ctx.extra.get("listen_mode") == "reserve":
            return
        loop = asyncio.get_running_loop()
        self.acceptor = Acceptor(self)
        self.server = await loop.create_server(self.acceptor, sock=self.sock, backlog=self.backlog)
        event(log, logging.INFO, "listener.started", listener=self.name, address=self.address_str)

    def same_socket_as(self, other: Listener) -> bool:
        """Whether this listener can take over `other`'s listening socket (same address and options)."""
        return (
            other.sock is not None
            and self.bind_to_port
            and (self.host, self.port, self.backlog) == (other.host, other.port, other.backlog)
        )

    def take_socket_from(self, old: Listener) -> None:
        """Envoy's listener update on an unchanged address: the listening socket (and its accept
        queue) passes to this listener, so no connection is refused; `old` keeps its connections."""
        self.sock, self.server, self.acceptor = old.sock, old.server, old.acceptor
        old.sock = old.server = old.acceptor = None
        if self.acceptor is not None:
            self.acceptor.listener = self
        event(log, logging.INFO, "listener.socket_handed_over", listener=self.name, address=self.address_str)

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        elif self.sock is not None:
            self.sock.close()
        self.sock = None
        self.acceptor = None

    def start_drain(self, graceful: bool = False) -> None:
        """Ask every connection's filter to finish politely (HTTP: ``Connection: close``). The
        listener keeps accepting until ``stop_accepting()`` (Envoy's graceful drain); connections
        accepted meanwhile are told at once. `graceful` (a listener replaced or removed by LDS): idle
        HTTP/1.1 keep-alive connections are not closed now (a request may be on its way); each gets
        ``Connection: close`` on its next response, and what is left closes when the drain ends."""
        if self.draining:
            return
        self.draining = True
        for conn in list(self.connections):
            conn.drain_started(graceful)


class Acceptor:
    """The protocol factory of a listening socket. Its target listener changes when an updated
    listener takes the socket over; connections already accepted keep the listener they got."""

    __slots__ = ("listener",)

    def __init__(self, listener: Listener) -> None:
        self.listener = listener

    def __call__(self) -> DownstreamConnection:
        return DownstreamConnection(self.listener)


class ListenerManager:
    """All listeners of the proxy: ``static_resources.listeners`` plus those from LDS.

    LDS updates go through ``build`` (validate and compile; no side effects), ``bind`` (claim a new
    address), then ``activate`` (swap in; the listener it replaces drains) or ``remove``. Listeners
    waiting for their routes sit in ``warming``; replaced or removed ones in ``draining_listeners``
    for ``drain_time`` seconds, after which their remaining connections are closed."""

    def __init__(self, protos, ctx: FactoryContext, path: str = "static_resources.listeners") -> None:
        self.ctx = ctx
        self.listeners: list[Listener] = []
        self.warming: dict[str, Listener] = {}
        self.draining_listeners: list[Listener] = []
        self.drain_time = 600.0
        self._drain_timers: dict[int, asyncio.TimerHandle] = {}
        names: dict[str, int] = {}
        addrs: dict[tuple[str, int], int] = {}
        for i, proto in enumerate(protos):
            lpath = f"{path}[{i}]"
            listener = Listener(proto, ctx, lpath)
            if listener.name in names:
                raise ConfigError(
                    f"{lpath}.name",
                    f"duplicate listener name '{listener.name}' (also listeners[{names[listener.name]}])",
                )
            names[listener.name] = i
            key = (listener.host, listener.port)
            if key in addrs and listener.port != 0:
                raise ConfigError(
                    f"{lpath}.address",
                    f"listener address {listener.address_str} is already used by listeners[{addrs[key]}]",
                )
            addrs[key] = i
            listener.manager = self
            self.listeners.append(listener)
        self.static_names = {listener.name for listener in self.listeners}
        self.stats = ctx.stats.scope("listener_manager.")
        self.stats.counter("listener_added").inc(len(self.listeners))
        self.draining = False
        self._update_gauges()

    # ---- dynamic listeners (LDS) ---------------------------------------------------------------

    def build(self, proto: listener_pb2.Listener, path: str) -> Listener:
        """Validate and compile a listener (ConfigError naming the field); binds nothing."""
        listener = Listener(proto, self.ctx, path)
        listener.manager = self
        return listener

    def address_owner(self, listener: Listener, ignore: set[str] = frozenset()) -> Listener | None:
        """Another listener (active or warming) on the same address, except those named in `ignore`."""
        if listener.port == 0 or not listener.bind_to_port:
            return None
        for other in list(self.listeners) + list(self.warming.values()):
            if other.name == listener.name or other.name in ignore or not other.bind_to_port:
                continue
            if (other.host, other.port) == (listener.host, listener.port):
                return other
        return None

    def needs_socket(self, listener: Listener) -> bool:
        """Whether activating `listener` needs a new socket (not taking over its predecessor's)."""
        if not listener.bind_to_port or listener.sock is not None:
            return False
        old = self.get(listener.name)
        return old is None or not listener.same_socket_as(old)

    def set_warming(self, listener: Listener) -> None:
        old = self.warming.get(listener.name)
        self.warming[listener.name] = listener
        if old is not None and old is not listener:
            old.stop_accepting()
        self._update_gauges()

    async def activate(self, listener: Listener) -> Listener | None:
        """Put `listener` in service under its name. A listener it replaces hands over its socket when
        the address is unchanged (nothing refused) and drains. Returns the replaced listener."""
        name = listener.name
        superseded = self.warming.pop(name, None)
        if superseded is not None and superseded is not listener:
            superseded.stop_accepting()
        old = self.get(name)
        if old is not None and listener.sock is None and listener.same_socket_as(old):
            listener.take_socket_from(old)
        elif listener.sock is None and listener.bind_to_port:
            listener.bind()
        await listener.start()
        if self.draining:
            listener.start_drain()
        if old is not None:
            self.listeners[self.listeners.index(old)] = listener
            self.stats.counter("listener_modified").inc()
            self._drain(old)
        else:
            self.listeners.append(listener)
            self.stats.counter("listener_added").inc()
        self.stats.counter("listener_create_success").inc()
        self._update_gauges()
        return old

    def remove(self, name: str) -> bool:
        """Remove a listener (and one warming under that name): it stops accepting and drains."""
        warming = self.warming.pop(name, None)
        if warming is not None:
            warming.stop_accepting()
        old = self.get(name)
        if old is not None:
            self.listeners.remove(old)
            self.stats.counter("listener_removed").inc()
            self._drain(old)
        self._update_gauges()
        return old is not None or warming is not None

    def _drain(self, old: Listener) -> None:
        old.stop_accepting()  # a no-op when its socket was handed over
        old.start_drain(graceful=True)
        if not old.connections:
            return
        self.draining_listeners.append(old)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._drain_timers[id(old)] = loop.call_later(self.drain_time, self._drain_done, old)
        for conn in list(old.connections):
            conn.closed_future.add_done_callback(lambda _f, old=old: self._maybe_drained(old))
        self._update_gauges()

    def _maybe_drained(self, old: Listener) -> None:
        if not old.connections and old in self.draining_listeners:
            self.draining_listeners.remove(old)
            timer = self._drain_timers.pop(id(old), None)
            if timer is not None:
                timer.cancel()
            self._update_gauges()

    def _drain_done(self, old: Listener) -> None:
        """drain_time passed: close what is left (idle HTTP first, politely), then abort the rest."""
        self._drain_timers.pop(id(old), None)
        for conn in list(old.connections):
            conn.drain_started()
        loop = asyncio.get_running_loop()
        loop.call_later(1.0, lambda: [c.abort() for c in list(old.connections)])
        if old in self.draining_listeners:
            self.draining_listeners.remove(old)
        self._update_gauges()

    def _update_gauges(self) -> None:
        self.stats.gauge("total_listeners_active").set(len(self.listeners))
        self.stats.gauge("total_listeners_warming").set(len(self.warming))
        self.stats.gauge("total_listeners_draining").set(len(self.draining_listeners))

    def __iter__(self):
        return iter(self.listeners)

    def get(self, name: str) -> Listener | None:
        for listener in self.listeners:
            if listener.name == name:
                return listener
        return None

    def bind_all(self) -> None:
        bound = []
        try:
            for listener in self.listeners:
                listener.bind()
                bound.append(listener)
        except OSError:
            for listener in bound:
                listener.stop_accepting()
            raise

    async def start(self) -> None:
        for listener in self.listeners:
            await listener.start()

    def find_for_original_dst(self, ip: str, port: int, exclude: Listener) -> Listener | None:
        """Envoy's hand-off target: the listener bound to exactly ip:port, else a wildcard listener
        (0.0.0.0 or ::) on that port."""
        wildcard = None
        for listener in self.listeners:
            if listener is exclude or listener.port != port:
                continue
            if listener.host == ip:
                return listener
            if listener.host in ("0.0.0.0", "::") and wildcard is None:
                if (listener.host == "::") == (":" in ip):
                    wildcard = listener
        return wildcard

    def start_drain(self, inbound_only: bool = False) -> None:
        self.draining = True
        for listener in self.listeners:
            if inbound_only and listener.proto.traffic_direction != 1:  # core.v3.TrafficDirection.INBOUND
                continue
            listener.start_drain()

    def stop_accepting(self) -> None:
        for listener in list(self.listeners) + list(self.warming.values()):
            listener.stop_accepting()

    def connections(self) -> list[DownstreamConnection]:
        return [c for listener in self.listeners + self.draining_listeners for c in listener.connections]

    async def wait_connections_closed(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            conns = self.connections()
            if not conns:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            waiters = [c.closed_future for c in conns]
            await asyncio.wait(waiters, timeout=min(left, 1.0))

    def abort_all(self) -> None:
        for conn in self.connections():
            conn.abort()


# --------------------------------------------------------------------------------------------------
# The connection
# --------------------------------------------------------------------------------------------------


class DownstreamConnection(asyncio.Protocol):
    """The accepted socket (``filters.network.base.DownstreamConnection``)."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.accept_listener = listener
        self.transport: asyncio.Transport | None = None
        self.remote_address: tuple[str, int] = ("0.0.0.0", 0)
        self.local_address: tuple[str, int] = ("0.0.0.0", 0)
        self.original_dst: tuple[str, int] | None = None
        self.requested_server_name = ""
        self.application_protocols: list[str] = []
        self.transport_protocol = "raw_buffer"
        self.ssl = None
        self.filter_chain: FilterChain | None = None
        self.filter = None
        self.reject_reason: str | None = None
        self.start_time = time.time()
        self.start_monotonic = time.monotonic()
        self._peeked = bytearray()
        self._eof = False
        self._lf_index = 0
        self._lf_instances: list = []
        self._lf_timer: asyncio.TimerHandle | None = None
        self._in_pre = False
        self._counted = False
        self._closed = False
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future] = []
        self.closed_future: asyncio.Future = asyncio.get_event_loop().create_future()

    # ---- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        if peer:
            self.remote_address = (peer[0], peer[1])
        if local:
            self.local_address = (local[0], local[1])
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        limit = self.listener.buffer_limit
        transport.set_write_buffer_limits(high=limit, low=limit // 2)
        self.listener.connections.add(self)
        self._begin_listener_filters()

    def data_received(self, data: bytes) -> None:
        f = self.filter
        if f is not None:
            f.on_data(data)
            return
        if self._closed:
            return
        self._peeked += data
        if len(self._peeked) >= self.listener.buffer_limit:
            self.transport.pause_reading()
        self._run_listener_filters()

    def eof_received(self) -> bool:
        f = self.filter
        if f is not None:
            f.on_eof()
            return True
        self._eof = True
        self._run_listener_filters()
        return True

    def connection_lost(self, exc: BaseException | None) -> None:
        self._closed = True
        self._cancel_lf_timer()
        if self._in_pre:
            self._in_pre = False
            self.accept_listener.pre_cx_active.dec()
        self.listener.connections.discard(self)
        self.accept_listener.connections.discard(self)
        if self._counted:
            self.listener.cx_active.dec()
            self.listener.cx_destroy.inc()
            self.listener.cx_length.record((time.monotonic() - self.start_monotonic) * 1000)
        for w in self._drain_waiters:
            if not w.done():
                w.set_result(None)
        self._drain_waiters.clear()
        if not self.closed_future.done():
            self.closed_future.set_result(None)
        f = self.filter
        if f is not None:
            try:
                f.on_connection_lost(exc)
            except Exception:
                log.exception("network filter on_connection_lost failed")

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        waiters, self._drain_waiters = self._drain_waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    # ---- listener filters and chain selection --------------------------------------------------

    def _begin_listener_filters(self) -> None:
        factories = self.listener.listener_filters
        self._lf_instances = [f.create() for f in factories]
        self._lf_index = 0
        if self._lf_instances:
            if not self._in_pre:
                self._in_pre = True
                self.accept_listener.pre_cx_active.inc()
            if self._lf_timer is None and self.listener.filters_timeout > 0:
                loop = asyncio.get_running_loop()
                self._lf_timer = loop.call_later(self.listener.filters_timeout, self._on_lf_timeout)
            for i, lf in enumerate(self._lf_instances):
                self._lf_index = i
                try:
                    done = lf.on_accept(self)
                except Exception:
                    log.exception("listener filter on_accept failed")
                    self._lf_failed()
                    return
                if self.reject_reason is not None:
                    self._lf_failed()
                    return
                if not done:
                    if self._peeked or self._eof:
                        self._run_listener_filters()
                    return
            self._lf_index = len(self._lf_instances)
        self._listener_filters_done()

    def _run_listener_filters(self) -> None:
        """Feed the bytes peeked so far to the waiting listener filter(s)."""
        if self.filter is not None or self._closed or self.filter_chain is not None:
            return
        data = bytes(self._peeked)
        eof = self._eof or len(self._peeked) >= self.listener.buffer_limit
        while self._lf_index < len(self._lf_instances):
            lf = self._lf_instances[self._lf_index]
            try:
                done = lf.on_data(self, data, eof)
            except Exception:
                log.exception("listener filter on_data failed")
                self._lf_failed()
                return
            if self.reject_reason is not None:
                self._lf_failed()
                return
            if not done:
                return
            self._lf_index += 1
            if self._lf_index < len(self._lf_instances):
                nxt = self._lf_instances[self._lf_index]
                try:
                    if nxt.on_accept(self):
                        continue
                except Exception:
                    log.exception("listener filter on_accept failed")
                    self._lf_failed()
                    return
                if self.reject_reason is not None:
                    self._lf_failed()
                    return
        self._listener_filters_done()

    def _on_lf_timeout(self) -> None:
        self._lf_timer = None
        if self.filter is not None or self._closed:
            return
        self.accept_listener.pre_cx_timeout.inc()
        if self.listener.continue_on_timeout:
            self._lf_index = len(self._lf_instances)
            self._listener_filters_done()
        else:
            self._close_pre()

    def _cancel_lf_timer(self) -> None:
        if self._lf_timer is not None:
            self._lf_timer.cancel()
            self._lf_timer = None

    def _lf_failed(self) -> None:
        self.accept_listener.lf_error.inc()
        self._close_pre()

    def _close_pre(self) -> None:
        self._cancel_lf_timer()
        if self.transport is not None:
            self.transport.abort() if self.reject_reason is None else self.transport.close()

    def _listener_filters_done(self) -> None:
        self._cancel_lf_timer()
        listener = self.listener
        # use_original_dst: hand the connection to the listener owning the original destination.
        if listener.use_original_dst and self.original_dst is not None and listener.manager is not None:
            target = listener.manager.find_for_original_dst(
                self.original_dst[0], self.original_dst[1], listener
            )
            if target is not None:
                listener.connections.discard(self)
                self.listener = target
                target.connections.add(self)
                if target.buffer_limit != listener.buffer_limit:
                    self.transport.set_write_buffer_limits(
                        high=target.buffer_limit, low=target.buffer_limit // 2
                    )
                self.original_dst_handed_off = True
                self._begin_listener_filters()
                return
        if self._in_pre:
            self._in_pre = False
            self.accept_listener.pre_cx_active.dec()
        facts = ConnectionFacts(
            local_ip=self.local_address[0],
            local_port=self.local_address[1],
            remote_ip=self.remote_address[0],
            remote_port=self.remote_address[1],
            server_name=self.requested_server_name,
            transport_protocol=self.transport_protocol,
            application_protocols=self.application_protocols,
        )
        chain = listener.find_chain(facts)
        if chain is None:
            listener.no_chain.inc()
            event(
                log,
                logging.DEBUG,
                "listener.no_filter_chain_match",
                listener=listener.name,
                remote=f"{self.remote_address[0]}:{self.remote_address[1]}",
            )
            self.transport.close()
            return
        self.filter_chain = chain
        ts = chain.transport_socket
        if ts is not None and not ts.ready:
            # The chain's secrets have not arrived (SDS): hold the connection, unread, until they do.
            self.transport.pause_reading()
            asyncio.get_running_loop().create_task(self._await_secrets(chain))
            return
        self._start_chain(chain)

    async def _await_secrets(self, chain: FilterChain) -> None:
        try:
            async with asyncio.timeout(SECRETS_WAIT_TIMEOUT):
                await chain.transport_socket.wait_ready()
        except TimeoutError:
            pass
        if self._closed:
            return
        self._start_chain(chain)

    def _start_chain(self, chain: FilterChain) -> None:
        listener = self.listener
        listener.cx_total.inc()
        listener.cx_active.inc()
        self._counted = True
        try:
            f = chain.factory.create(self)
            f.on_new_connection(self)
        except Exception:
            log.exception("network filter creation failed")
            self.transport.abort()
            return
        self.filter = f
        if listener.draining:
            f.on_drain_started()
        if chain.transport_socket is not None:
            peeked, self._peeked = bytes(self._peeked), bytearray()
            tls = chain.transport_socket.wrap_downstream(self.transport, self, peeked, listener.stats)
            if tls is None:  # secrets still missing: ssl.connection_error counted
                self.transport.close()
                return
            raw, self.transport, self.ssl = self.transport, tls, tls  # plaintext comes to data_received
            if self._eof:  # the peer's FIN came with the pre-read bytes: it belongs to the TLS layer
                self._eof = False
                if not tls.eof_received():
                    tls.close()
            elif not raw.is_reading():
                raw.resume_reading()
        elif self._peeked:
            data = bytes(self._peeked)
            self._peeked = bytearray()
            if not self.transport.is_reading():
                self.transport.resume_reading()
            f.on_data(data)
        if self._eof and not self._closed and self.filter is f:
            f.on_eof()

    def drain_started(self, graceful: bool = False) -> None:
        f = self.filter
        if f is None:
            return
        if graceful and hasattr(f, "draining"):
            # An HTTP filter only marks itself draining: ``Connection: close`` goes on the next
            # response and the connection closes after it, but an idle keep-alive connection is not
            # closed under a request that may already be on its way (Envoy does the same).
            f.draining = True
            return
        try:
            f.on_drain_started()
        except Exception:
            log.exception("network filter on_drain_started failed")

    # ---- what network filters call -------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if not self._closed:
            self.transport.write(data)

    def writelines(self, chunks: list[bytes]) -> None:
        if not self._closed:
            self.transport.writelines(chunks)

    def write_eof(self) -> None:
        """Half-close our side (FIN) once the buffer is flushed."""
        if not self._closed and self.transport.can_write_eof():
            self.transport.write_eof()

    def pause_reading(self) -> None:
        if not self._closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if not self._closed:
            self.transport.resume_reading()

    def close(self) -> None:
        if not self._closed and self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if not self._closed and self.transport is not None:
            self.transport.abort()

    def is_write_paused(self) -> bool:
        return self._write_paused

    @property
    def closed(self) -> bool:
        return self._closed

    async def drain(self) -> None:
        if not self._write_paused or self._closed:
            return
        fut = asyncio.get_running_loop().create_future()
        self._drain_waiters.append(fut)
        await fut

    def write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size() if self.transport is not None else 0
