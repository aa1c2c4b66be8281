"""Envoy's admin endpoints. Each handler takes ``(server, query)`` and returns a ``Response``.

``query`` maps each parameter to its last value (``?graceful`` maps to ``""``). Handlers only read
the server (``bootstrap``, ``listener_manager``, ``cluster_manager``, ``stats``, ``state``,
``options``, ``start_time``) or call its documented hooks (``shutdown``, ``start_drain``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from envoy.admin.v3 import clusters_pb2, listeners_pb2, metrics_pb2, server_info_pb2
from envoy.config.core.v3 import address_pb2, health_check_pb2
from google.protobuf import json_format

from proxy.admin import config_dump
from proxy.stats import export

log = logging.getLogger("proxy.admin")

TEXT = "text/plain; charset=UTF-8"
JSON = "application/json"
PROM = "text/plain; version=0.0.4; charset=UTF-8"
HTML = "text/html; charset=UTF-8"


@dataclass
class Response:
    status: int
    body: str | bytes
    content_type: str = TEXT
    after: Callable[[], None] | None = None  # runs once the response has been written
    headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Endpoint:
    path: str
    help: str
    handler: Callable
    post_only: bool = False


def _to_json(msg, all_fields: bool = False) -> str:
    return (
        json_format.MessageToJson(
            msg, preserving_proto_field_name=True, indent=1, always_print_fields_with_no_presence=all_fields
        )
        + "\n"
    )


# --- state -------------------------------------------------------------------------------------------


def server_state_name(server) -> str:
    """Envoy's rule: an initialized server whose health check was failed reports DRAINING."""
    state = getattr(server, "state", None)
    name = getattr(state, "name", None) or (str(state) if state is not None else "LIVE")
    if name == "LIVE" and getattr(server, "healthcheck_failed", False):
        return "DRAINING"
    return name


def ready(server, q) -> Response:
    state = server_state_name(server)
    return Response(200 if state == "LIVE" else 503, state + "\n")


def server_info(server, q) -> Response:
    info = server_info_pb2.ServerInfo()
    info.version = getattr(server, "VERSION", None) or _version()
    info.state = server_info_pb2.ServerInfo.State.Value(server_state_name(server))
    uptime = int(server.uptime()) if hasattr(server, "uptime") else 0
    info.uptime_current_epoch.seconds = uptime
    info.uptime_all_epochs.seconds = uptime
    info.hot_restart_version = "disabled"
    opts = getattr(server, "options", None)
    if opts is not None:
        clo = info.command_line_options
        clo.concurrency = getattr(opts, "concurrency", 1)
        clo.config_path = getattr(opts, "config_path", "")
        clo.config_yaml = getattr(opts, "config_yaml", "")
        clo.log_level = getattr(opts, "log_level", "info")
        clo.service_node = getattr(opts, "service_node", "")
        clo.service_cluster = getattr(opts, "service_cluster", "")
        clo.drain_time.seconds = getattr(opts, "drain_time_s", 600)
        clo.parent_shutdown_time.seconds = getattr(opts, "parent_shutdown_time_s", 900)
        clo.mode = (
            server_info_pb2.CommandLineOptions.Validate
            if getattr(opts, "mode", "serve") == "validate"
            else server_info_pb2.CommandLineOptions.Serve
        )
        clo.disable_hot_restart = True
    bootstrap = getattr(server, "bootstrap", None)
    if bootstrap is not None and bootstrap.HasField("node"):
        info.node.CopyFrom(bootstrap.node)
    # Envoy prints every field here, including "state": "LIVE" (enum value 0).
    return Response(200, _to_json(info, all_fields=True), JSON)


def _version() -> str:
    try:
        from proxy.server import VERSION

        return VERSION
    except Exception:  # noqa: BLE001 - the version string is cosmetic
        return "isthmus-proxy"


# --- config dump -------------------------------------------------------------------------------------


def config_dump_handler(server, q) -> Response:
    try:
        body = config_dump.config_dump_json(
            server, q.get("resource") or None, q.get("mask"), "include_eds" in q
        )
    except config_dump.ConfigDumpError as e:
        return Response(e.status, str(e) + "\n")
    return Response(200, body, JSON)


def certs_handler(server, q) -> Response:
    from proxy.tls.admin import certificates, tls_factories

    return Response(200, _to_json(certificates(tls_factories(server))), JSON)


# --- clusters ----------------------------------------------------------------------------------------

_HOST_STAT_ORDER = (
    "cx_active",
    "cx_connect_fail",
    "cx_total",
    "rq_active",
    "rq_error",
    "rq_success",
    "rq_timeout",
    "rq_total",
)
_GAUGES = {"cx_active", "rq_active"}
_CB_DEFAULTS = {"max_connections": 1024, "max_pending_requests": 1024, "max_requests": 1024, "max_retries": 3}


def _clusters(server) -> list:
    cm = getattr(server, "cluster_manager", None)
    if cm is None:
        return []
    clusters = getattr(cm, "clusters", None)
    if isinstance(clusters, dict):
        return list(clusters.values())
    try:
        return list(cm)
    except TypeError:
        return []


def _cluster_proto(server, cluster):
    proto = getattr(cluster, "proto", None)
    if proto is not None:
        return proto
    for c in server.bootstrap.static_resources.clusters:
        if c.name == cluster.name:
            return c
    return None


def _hosts(cluster) -> list:
    """Every host of a cluster, across priorities (the upstream module's names tried in turn)."""
    for attr in ("all_hosts", "hosts"):
        v = getattr(cluster, attr, None)
        if v is None:
            continue
        v = v() if callable(v) else v
        if isinstance(v, dict):
            v = list(v.values())
        hosts = list(v)
        if hosts and isinstance(hosts[0], list):  # per-priority lists
            hosts = [h for level in hosts for h in level]
        return hosts
    return []


def _thresholds(proto) -> dict[str, dict[str, int]]:
    out = {"default_priority": dict(_CB_DEFAULTS), "high_priority": dict(_CB_DEFAULTS)}
    if proto is None:
        return out
    for t in proto.circuit_breakers.thresholds:
        prio = "high_priority" if t.priority == 1 else "default_priority"
        for name in _CB_DEFAULTS:
            if t.HasField(name):
                out[prio][name] = getattr(t, name).value
    return out


def _locality(host):
    loc = getattr(host, "locality", None)
    return (
        (getattr(loc, "region", ""), getattr(loc, "zone", ""), getattr(loc, "sub_zone", ""))
        if loc
        else ("", "", "")
    )


cluster_hosts = _hosts  # also used by proxy.workers to report per-host stats


def _host_stats(host, server=None, cluster: str = "") -> dict[str, int]:
    stats = getattr(host, "stats", None)
    d = stats.as_dict() if stats is not None and hasattr(stats, "as_dict") else {}
    out = {k: int(d.get(k, 0)) for k in _HOST_STAT_ORDER}
    # --concurrency N: the traffic is the workers'; their per-host numbers are added.
    extra = getattr(server, "worker_host_stats", None)
    if extra is not None:
        for k, v in extra(cluster, host.address_str).items():
            if k in out:
                out[k] += int(v)
    return out


def _health(host) -> str:
    f = getattr(host, "health_flags_str", None)
    return f() if callable(f) else "healthy"


def clusters_handler(server, q) -> Response:
    if q.get("format") == "json":
        return Response(200, _clusters_json(server), JSON)
    lines = []
    for cluster in sorted(_clusters(server), key=lambda c: c.name):
        name = cluster.name
        proto = _cluster_proto(server, cluster)
        obs = proto.alt_stat_name if proto is not None and proto.alt_stat_name else name
        lines.append(f"{name}::observability_name::{obs}")
        for prio, limits in _thresholds(proto).items():
            for k, v in limits.items():
                lines.append(f"{name}::{prio}::{k}::{v}")
        lines.append(f"{name}::added_via_api::{str(bool(getattr(cluster, 'added_via_api', False))).lower()}")
        for host in _hosts(cluster):
            prefix = f"{name}::{host.address_str}::"
            for k, v in _host_stats(host, server, name).items():
                lines.append(f"{prefix}{k}::{v}")
            region, zone, sub_zone = _locality(host)
            lines.append(f"{prefix}hostname::{getattr(host, 'hostname', '') or ''}")
            lines.append(f"{prefix}health_flags::{_health(host)}")
            lines.append(f"{prefix}weight::{getattr(host, 'weight', 1)}")
            lines.append(f"{prefix}region::{region}")
            lines.append(f"{prefix}zone::{zone}")
            lines.append(f"{prefix}sub_zone::{sub_zone}")
            lines.append(f"{prefix}canary::false")
            lines.append(f"{prefix}priority::{getattr(host, 'priority', 0)}")
            lines.append(f"{prefix}success_rate::-1")
            lines.append(f"{prefix}local_origin_success_rate::-1")
    return Response(200, "".join(line + "\n" for line in lines))


def _clusters_json(server) -> str:
    out = clusters_pb2.Clusters()
    for cluster in sorted(_clusters(server), key=lambda c: c.name):
        proto = _cluster_proto(server, cluster)
        st = out.cluster_statuses.add(
            name=cluster.name, added_via_api=bool(getattr(cluster, "added_via_api", False))
        )
        st.observability_name = (
            proto.alt_stat_name if proto is not None and proto.alt_stat_name else cluster.name
        )
        if proto is not None and proto.HasField("circuit_breakers"):
            st.circuit_breakers.CopyFrom(proto.circuit_breakers)
        for host in _hosts(cluster):
            hs = st.host_statuses.add()
            ip, port = host.address[0], host.address[1]
            hs.address.socket_address.address = ip
            hs.address.socket_address.port_value = port
            for k, v in _host_stats(host, server, cluster.name).items():
                hs.stats.add(
                    name=k,
                    value=v,
                    type=(
                        metrics_pb2.SimpleMetric.GAUGE if k in _GAUGES else metrics_pb2.SimpleMetric.COUNTER
                    ),
                )
            flags = getattr(host, "health_flags", set()) or set()
            hs.health_status.eds_health_status = (
                health_check_pb2.UNHEALTHY
                if "/failed_eds_health" in flags
                else health_check_pb2.DEGRADED
                if "/degraded_eds_health" in flags
                else health_check_pb2.HEALTHY
            )
            hs.health_status.pending_dynamic_removal = "/pending_dynamic_removal" in flags
            hs.weight = getattr(host, "weight", 1)
            hs.hostname = getattr(host, "hostname", "") or ""
            hs.priority = getattr(host, "priority", 0)
            loc = getattr(host, "locality", None)
            if loc is not None and hasattr(loc, "DESCRIPTOR"):
                hs.locality.CopyFrom(loc)
    return _to_json(out)


# --- listeners ---------------------------------------------------------------------------------------


def _listeners(server) -> list:
    lm = getattr(server, "listener_manager", None)
    return list(getattr(lm, "listeners", None) or []) if lm is not None else []


def listeners_handler(server, q) -> Response:
    if q.get("format") == "json":
        out = listeners_pb2.Listeners()
        for listener in _listeners(server):
            st = out.listener_statuses.add(name=listener.name)
            st.local_address.CopyFrom(
                address_pb2.Address(
                    socket_address=address_pb2.SocketAddress(address=listener.host, port_value=listener.port)
                )
            )
        return Response(200, _to_json(out), JSON)
    body = "".join(
        f"{listener.name}::{_fmt_addr(listener.host, listener.port)}\n" for listener in _listeners(server)
    )
    return Response(200, body)


def _fmt_addr(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --- stats -------------------------------------------------------------------------------------------


def _refresh_server_gauges(server) -> None:
    stats = getattr(server, "stats", None)
    if stats is not None and hasattr(server, "uptime"):
        stats.gauge("server.uptime").set(int(server.uptime()))


def _stats_query(q) -> tuple[re.Pattern | None, bool] | Response:
    flt = q.get("filter")
    pattern = None
    if flt:
        try:
            pattern = re.compile(flt)
        except re.error as e:
            return Response(400, f"Invalid regex: {e}\n")
    return pattern, "usedonly" in q


def _stats_store(server):
    """The stats to show: with --concurrency N, the main's plus the sum over the workers."""
    export_store = getattr(server, "stats_for_export", None)
    return export_store() if export_store is not None else server.stats


def stats_handler(server, q) -> Response:
    parsed = _stats_query(q)
    if isinstance(parsed, Response):
        return parsed
    pattern, used_only = parsed
    _refresh_server_gauges(server)
    store = _stats_store(server)
    fmt = q.get("format", "text")
    if fmt == "json":
        return Response(200, export.json_text(store, pattern, used_only), JSON)
    if fmt == "prometheus":
        return Response(200, export.prometheus(store, pattern, used_only), PROM)
    if fmt not in ("text", ""):
        return Response(404, "usage: /stats?format=(json|prometheus|text)\n")
    return Response(200, export.text(store, pattern, used_only))


def prometheus_handler(server, q) -> Response:
    parsed = _stats_query(q)
    if isinstance(parsed, Response):
        return parsed
    pattern, used_only = parsed
    _refresh_server_gauges(server)
    return Response(200, export.prometheus(_stats_store(server), pattern, used_only), PROM)


def workers_handler(server, q) -> Response:
    """Isthmus: the worker processes of --concurrency N (pid, ready, restarts, and the downstream
    connections and requests each has served, from its last stats)."""
    pool = getattr(server, "workers", None)
    if pool is None:
        rows = [{"index": 0, "pid": os.getpid(), "ready": bool(getattr(server, "live", True)), "restarts": 0}]
        return Response(200, json.dumps({"concurrency": 1, "workers": rows}, indent=2) + "\n", JSON)
    rows = []
    for w in pool.workers:
        row = w.info()
        counters = (w.last_stats or {}).get("counters", {})
        row["downstream_cx_total"] = sum(
            v for n, v in counters.items() if n.startswith("listener.") and n.endswith(".downstream_cx_total")
        )
        row["downstream_rq_total"] = sum(
            v
            for n, v in counters.items()
            if n.startswith("http.")
            and n.endswith(".downstream_rq_total")
            and not n.startswith("http.admin.")
        )
        rows.append(row)
    return Response(200, json.dumps({"concurrency": pool.count, "workers": rows}, indent=2) + "\n", JSON)


# --- mutations (POST only) ---------------------------------------------------------------------------


def quitquitquit(server, q) -> Response:
    def stop() -> None:
        shutdown = getattr(server, "shutdown", None)
        if shutdown is not None:
            shutdown(drain=False)

    return Response(200, "OK\n", after=stop)


def healthcheck_fail(server, q) -> Response:
    server.healthcheck_failed = True
    return Response(200, "OK\n")


def healthcheck_ok(server, q) -> Response:
    server.healthcheck_failed = False
    return Response(200, "OK\n")


def drain_listeners(server, q) -> Response:
    """``?inboundonly``: only INBOUND listeners; ``?graceful``: keep accepting through the drain
    period (``--drain-time-s``) while connections are asked to close, then stop; otherwise stop
    accepting at once (existing connections are drained either way)."""
    inbound_only = "inboundonly" in q
    graceful = "graceful" in q
    start_drain = getattr(server, "start_drain", None)
    if start_drain is not None:
        if getattr(server, "workers", None) is not None:  # --concurrency N: workers do the same
            start_drain(inbound_only=inbound_only, graceful=graceful)
        else:
            start_drain(inbound_only=inbound_only)
    targets = [
        listener
        for listener in _listeners(server)
        if not inbound_only or getattr(listener.proto, "traffic_direction", 0) == 1
    ]

    def stop_accepting() -> None:
        for listener in targets:
            stop = getattr(listener, "stop_accepting", None)
            if stop is not None:
                stop()

    if graceful:
        drain_s = getattr(getattr(server, "options", None), "drain_time_s", 600)
        asyncio.get_running_loop().call_later(drain_s, stop_accepting)
        return Response(200, "OK\n")
    return Response(200, "OK\n", after=stop_accepting)


_LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    "off": logging.CRITICAL + 10,
}
_LEVEL_NAMES = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warning",
    logging.ERROR: "error",
    logging.CRITICAL: "critical",
    logging.CRITICAL + 10: "off",
}


def _proxy_loggers() -> dict[str, logging.Logger]:
    names = sorted(n for n in logging.root.manager.loggerDict if n == "proxy" or n.startswith("proxy."))
    return {n: logging.getLogger(n) for n in names}


def _loggers_text() -> str:
    lines = ["active loggers:"]
    for name, lg in _proxy_loggers().items():
        lines.append(f"  {name}: {_LEVEL_NAMES.get(lg.getEffectiveLevel(), str(lg.getEffectiveLevel()))}")
    return "\n".join(lines) + "\n"


_LOGGING_USAGE = (
    "usage: /logging?<name>=<level> (change single level)\n"
    "usage: /logging?level=<level> (change all levels)\n"
    "levels: " + " ".join(_LEVELS) + "\n"
)


def logging_handler(server, q) -> Response:
    if not q:
        return Response(200, _loggers_text())
    if len(q) != 1:
        return Response(404, _LOGGING_USAGE)
    ((name, level),) = q.items()
    lvl = _LEVELS.get(level.lower())
    if lvl is None:
        return Response(404, _LOGGING_USAGE)
    if name == "level":
        logging.getLogger().setLevel(lvl)
        for lg in _proxy_loggers().values():
            lg.setLevel(logging.NOTSET)  # follow the root again
    else:
        if name not in _proxy_loggers() and name != "proxy":
            return Response(404, _LOGGING_USAGE)
        logging.getLogger(name).setLevel(lvl)
    return Response(200, _loggers_text())


def reopen_logs(server, q) -> Response:
    from proxy.accesslog import loggers

    loggers.reopen_all()
    return Response(200, "OK\n")


# --- index ------------------------------------------------------------------------------------------


def help_text() -> str:
    lines = ["admin commands are:"]
    lines += [f"  {e.path}: {e.help}" for e in ENDPOINTS]
    return "\n".join(lines) + "\n"


def help_handler(server, q) -> Response:
    return Response(200, help_text())


def home(server, q) -> Response:
    items = "".join(
        f'<tr><td>{"POST " if e.post_only else ""}<a href="{e.path}">{e.path}</a></td><td>{e.help}</td></tr>'
        for e in ENDPOINTS
    )
    return Response(
        200,
        f"<!DOCTYPE html><html><head><title>Isthmus proxy admin</title></head><body>"
        f"<h1>Admin</h1><table>{items}</table></body></html>\n",
        HTML,
    )


ENDPOINTS: list[Endpoint] = [
    Endpoint("/", "Admin home page", home),
    Endpoint("/certs", "print certs on machine", certs_handler),
    Endpoint("/clusters", "upstream cluster status", clusters_handler),
    Endpoint("/config_dump", "dump current Envoy configs (experimental)", config_dump_handler),
    Endpoint("/drain_listeners", "drain listeners", drain_listeners, post_only=True),
    Endpoint("/healthcheck/fail", "cause the server to fail health checks", healthcheck_fail, post_only=True),
    Endpoint("/healthcheck/ok", "cause the server to pass health checks", healthcheck_ok, post_only=True),
    Endpoint("/help", "print out list of admin commands", help_handler),
    Endpoint("/listeners", "print listener info", listeners_handler),
    Endpoint("/logging", "query/change logging levels", logging_handler, post_only=True),
    Endpoint("/quitquitquit", "exit the server", quitquitquit, post_only=True),
    Endpoint("/ready", "print server state, return 200 if LIVE, otherwise return 503", ready),
    Endpoint("/reopen_logs", "reopen access logs", reopen_logs, post_only=True),
    Endpoint("/server_info", "print server version/status information", server_info),
    Endpoint("/stats", "print server stats", stats_handler),
    Endpoint("/stats/prometheus", "print server stats in prometheus format", prometheus_handler),
    Endpoint("/workers", "the worker processes of --concurrency N", workers_handler),
]

BY_PATH: dict[str, Endpoint] = {e.path: e for e in ENDPOINTS}


def dispatch(server, method: str, path: str, query: dict[str, str]) -> Response:
    endpoint = BY_PATH.get(path)
    if endpoint is None:
        return Response(404, "invalid path. " + help_text())
    if endpoint.post_only and method != "POST":
        return Response(405, f"Method {method} not allowed, POST required.\n", headers=[("allow", "POST")])
    if not endpoint.post_only and method not in ("GET", "HEAD", "POST"):
        return Response(405, f"Method {method} not allowed.\n", headers=[("allow", "GET")])
    try:
        return endpoint.handler(server, query)
    except Exception as e:  # an admin bug must not take the proxy (or the admin) down
        log.exception("admin handler %s failed", path)
        return Response(500, f"internal error: {type(e).__name__}: {e}\n")


__all__ = ["Response", "dispatch", "ENDPOINTS", "help_text", "server_state_name", "json"]
