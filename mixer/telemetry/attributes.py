"""Turn Envoy v3 access-log entries into Istio's standard metric labels (pure).

The contract with the proxy's ``envoy.access_loggers.http_grpc``/``tcp_grpc`` is in docs/mixer.md.
Our proxy puts Istio's labels, already resolved, in every entry's
``common_properties.metadata.filter_metadata["isthmus"]`` (a Struct: ``reporter``, ``source`` and
``destination`` as ``{workload, namespace, app, version, principal, service_account}``,
``destination_service``, ``connection_security_policy``); an empty value falls back as below (the local
side to the node's metadata), and an unknown value is reported as ``unknown``.

A real Envoy without that Struct works too; then everything comes from standard Envoy fields:

* **The reporting proxy** is the ``identifier.node`` of the stream's first message: the node id
  (Istio form ``sidecar~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local``) and its metadata with
  Istio's keys ``WORKLOAD_NAME``, ``NAMESPACE``, ``LABELS`` (``app``, ``version``).
* **The reporter side** comes from ``common_properties.upstream_cluster`` as Istio names clusters: an
  ``inbound|...`` cluster means ``reporter="destination"`` (the node is the destination); anything else
  means ``reporter="source"`` (the node is the source; gateways report as source too).
* **The peer** (the other side) is Istio's peer metadata, a ``google.protobuf.Struct`` with the same
  keys as node metadata (``WORKLOAD_NAME``, ``NAMESPACE``, ``LABELS``), read from, in order:
  ``common_properties.filter_state_objects["downstream_peer"]`` (inbound) or ``["upstream_peer"]``
  (outbound), an ``Any`` packing the Struct; else the ``x-envoy-peer-metadata`` header (base64 of the
  serialised Struct, Istio's metadata-exchange header) among the logged request headers (inbound) or
  response headers (outbound). Without either, the peer's labels are ``unknown``.
* **Principals** come from ``common_properties.tls_properties``: the URI SAN of the local and of the
  peer certificate. ``connection_security_policy`` is ``mutual_tls`` when the destination reporter saw
  a peer certificate, ``none`` when it did not, and ``unknown`` from the source reporter (as in Istio).
* **destination_service** is the host of an ``outbound|<port>|<subset>|<host>`` cluster; inbound, the
  request's authority (a short name is completed with the destination namespace,
  ``<name>.<ns>.svc.cluster.local``). ``destination_service_name``/``_namespace`` are the first two labels
  of a ``*.svc.*`` host, else the host and ``unknown``. A request the source proxy answered itself for
  want of a route (``404`` with flag ``NR``, no upstream cluster; e.g. a gateway path no VirtualService
  routes, or the browser's ``/favicon.ico``) has ``destination_service="unknown"`` (and ``unknown``
  name and namespace), as Istio's stats report it, not the Host header.
* ``request_protocol`` is ``grpc`` when the logged ``content-type`` is ``application/grpc...``, else
  ``http``; ``tcp`` for TCP entries. ``response_code`` is the HTTP status (``0`` when none was sent).
  ``response_flags`` are Envoy's short flags (``UH``, ``UF``, ``RL``, ``UAEX``, ...) joined by ``,``, or
  ``-``.
* HTTP: ``request_bytes`` = request header + body bytes, ``response_bytes`` likewise; the duration is
  ``common_properties.duration``, else ``time_to_last_downstream_tx_byte``.
* TCP: an entry with ``access_log_type`` ``TcpUpstreamConnected`` or ``DownstreamStart`` counts a
  connection opened; ``TcpConnectionEnd`` (or an entry without a type that is not
  ``intermediate_log_entry``) counts it closed and adds its bytes (``connection_properties``
  ``received_bytes``/``sent_bytes``, seen from the proxy's downstream side). An entry without a type
  counts as opened and closed at once. Periodic entries add nothing, since their byte counts are totals.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from envoy.data.accesslog.v3 import accesslog_pb2
from google.protobuf import json_format, struct_pb2

UNKNOWN = "unknown"
PEER_HEADER = "x-envoy-peer-metadata"
ISTHMUS_METADATA = "isthmus"
DOWNSTREAM_PEER = "downstream_peer"
UPSTREAM_PEER = "upstream_peer"

REQUEST_LABELS = (
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "request_protocol",
    "response_code",
    "response_flags",
    "connection_security_policy",
)
TCP_LABELS = tuple(n for n in REQUEST_LABELS if n != "response_code")

# Envoy's short response flags, in the order of the ResponseFlags message
RESPONSE_FLAGS = (
    ("failed_local_healthcheck", "LH"),
    ("no_healthy_upstream", "UH"),
    ("upstream_request_timeout", "UT"),
    ("local_reset", "LR"),
    ("upstream_remote_reset", "UR"),
    ("upstream_connection_failure", "UF"),
    ("upstream_connection_termination", "UC"),
    ("upstream_overflow", "UO"),
    ("no_route_found", "NR"),
    ("delay_injected", "DI"),
    ("fault_injected", "FI"),
    ("rate_limited", "RL"),
    ("unauthorized_details", "UAEX"),
    ("rate_limit_service_error", "RLSE"),
    ("downstream_connection_termination", "DC"),
    ("upstream_retry_limit_exceeded", "URX"),
    ("stream_idle_timeout", "SI"),
    ("invalid_envoy_request_headers", "IH"),
    ("downstream_protocol_error", "DPE"),
    ("upstream_max_stream_duration_reached", "UMSDR"),
    ("response_from_cache_filter", "RFCF"),
    ("no_filter_config_found", "NFCF"),
    ("duration_timeout", "DT"),
    ("upstream_protocol_error", "UPE"),
    ("no_cluster_found", "NC"),
    ("overload_manager", "OM"),
    ("dns_resolution_failure", "DF"),
    ("downstream_remote_reset", "DR"),
)
_OPEN_TYPES = {"TcpUpstreamConnected", "DownstreamStart"}


@dataclass(frozen=True)
class Workload:
    workload: str = UNKNOWN
    namespace: str = UNKNOWN
    app: str = UNKNOWN
    version: str = UNKNOWN


@dataclass
class Report:
    kind: str  # "http" | "tcp"
    labels: dict[str, str]
    mtls: bool = False
    duration_ms: float = 0.0
    request_bytes: int = 0
    response_bytes: int = 0
    opened: bool = False
    closed: bool = False
    sent_bytes: int = 0
    received_bytes: int = 0
    extra: dict = field(default_factory=dict)


def struct_to_dict(st: struct_pb2.Struct) -> dict:
    """A Struct as plain Python (faster than json_format on the per-entry path)."""
    return {k: _plain(v) for k, v in st.items()}


def _plain(v):
    if isinstance(v, struct_pb2.Struct):
        return struct_to_dict(v)
    if isinstance(v, struct_pb2.ListValue):
        return [_plain(x) for x in v]
    return v


def workload_from_metadata(meta: dict, node_id: str = "") -> Workload:
    """Istio node/peer metadata (a plain dict) -> the workload's identity labels."""
    labels = meta.get("LABELS") or {}
    pod, ns = "", ""
    parts = node_id.split("~")
    if len(parts) == 4:
        pod, _, ns = parts[2].rpartition(".")
    return Workload(
        workload=str(meta.get("WORKLOAD_NAME") or pod or _workload_guess(labels)),
        namespace=str(meta.get("NAMESPACE") or ns or UNKNOWN),
        app=str(labels.get("app") or labels.get("app.kubernetes.io/name") or UNKNOWN),
        version=str(labels.get("version") or labels.get("app.kubernetes.io/version") or UNKNOWN),
    )


def _workload_guess(labels: dict) -> str:
    # without WORKLOAD_NAME or a pod name: "<app>-<version>", the Bookinfo deployments' naming
    app, version = labels.get("app"), labels.get("version")
    if not app:
        return UNKNOWN
    return f"{app}-{version}" if version else str(app)


def node_workload(node) -> Workload:
    meta = json_format.MessageToDict(node.metadata) if node.HasField("metadata") else {}
    return workload_from_metadata(meta, node.id)


def _peer_from_any(common, key: str) -> Workload | None:
    obj = common.filter_state_objects.get(key)
    if obj is None:
        return None
    st = struct_pb2.Struct()
    if not obj.Unpack(st):
        return None
    return workload_from_metadata(json_format.MessageToDict(st))


def decode_peer_header(value: str) -> Workload | None:
    try:
        st = struct_pb2.Struct()
        st.ParseFromString(base64.b64decode(value, validate=False))
    except Exception:  # noqa: BLE001 (a corrupt header means no peer, not a failed report)
        return None
    meta = json_format.MessageToDict(st)
    return workload_from_metadata(meta) if meta else None


def encode_peer_header(meta: dict) -> str:
    """base64 of a serialised Struct: what Istio's metadata exchange puts in x-envoy-peer-metadata."""
    st = struct_pb2.Struct()
    st.update(meta)
    return base64.b64encode(st.SerializeToString()).decode()


def response_flags(common) -> str:
    flags = common.response_flags
    out = []
    for name, short in RESPONSE_FLAGS:
        if name == "unauthorized_details":
            if flags.HasField(name):
                out.append(short)
        elif getattr(flags, name):
            out.append(short)
    return ",".join(out) or "-"


def _uri_san(cert_props) -> str | None:
    for san in cert_props.subject_alt_name:
        if san.uri:
            return san.uri
    return None


def _service_from_cluster(cluster: str) -> str | None:
    parts = cluster.split("|")
    if len(parts) == 4 and parts[3]:
        return parts[3]
    return None


def _split_service(host: str) -> tuple[str, str]:
    labels = host.split(".")
    if len(labels) >= 3 and labels[2] == "svc":
        return labels[0], labels[1]
    return host, UNKNOWN


def _host_only(authority: str) -> str:
    if authority.startswith("["):
        return authority[1 : authority.find("]")]
    return authority.rsplit(":", 1)[0] if authority.count(":") == 1 else authority


def _duration_ms(d) -> float:
    return d.seconds * 1000.0 + d.nanos / 1e6


def _side(meta: dict, fallback: Workload) -> tuple[Workload, str | None]:
    """One side of the isthmus Struct ({workload, namespace, app, version, principal}), empty -> fallback."""
    return (
        Workload(
            workload=str(meta.get("workload") or fallback.workload),
            namespace=str(meta.get("namespace") or fallback.namespace),
            app=str(meta.get("app") or fallback.app),
            version=str(meta.get("version") or fallback.version),
        ),
        meta.get("principal") or None,
    )


_ISTHMUS_CACHE: dict[tuple, tuple[dict, bool, str | None]] = {}
_ISTHMUS_CACHE_MAX = 4096


def _labels(node: Workload, common, headers) -> tuple[dict, bool, str | None]:
    """Labels except service, protocol and code; whether mTLS was used; a destination_service hint.

    With the isthmus Struct, entries of one edge carry the same bytes, so its result is memoised by
    (node, Struct bytes, cluster): reading a Struct field by field is the slow part of ingesting.
    """
    isthmus = common.metadata.filter_metadata.get(ISTHMUS_METADATA)
    if isthmus is None:
        return _compute_labels(node, common, headers, {})
    key = (node, isthmus.SerializeToString(deterministic=True), common.upstream_cluster)
    cached = _ISTHMUS_CACHE.get(key)
    if cached is None:
        if len(_ISTHMUS_CACHE) >= _ISTHMUS_CACHE_MAX:
            _ISTHMUS_CACHE.clear()
        cached = _ISTHMUS_CACHE[key] = _compute_labels(node, common, headers, struct_to_dict(isthmus))
    labels, mtls, hint = cached
    return {**labels, "response_flags": response_flags(common)}, mtls, hint


def _compute_labels(node: Workload, common, headers, meta: dict) -> tuple[dict, bool, str | None]:
    inbound = common.upstream_cluster.startswith("inbound|")
    if meta.get("reporter") in ("source", "destination"):
        inbound = meta["reporter"] == "destination"
    local = _uri_san(common.tls_properties.local_certificate_properties)
    remote = _uri_san(common.tls_properties.peer_certificate_properties)
    if meta:
        src, src_principal = _side(meta.get("source") or {}, Workload() if inbound else node)
        dst, dst_principal = _side(meta.get("destination") or {}, node if inbound else Workload())
        policy = str(meta.get("connection_security_policy") or UNKNOWN)
        mtls = policy == "mutual_tls"
        hint = meta.get("destination_service") or None
    else:
        peer = _peer_from_any(common, DOWNSTREAM_PEER if inbound else UPSTREAM_PEER)
        if peer is None and headers is not None and PEER_HEADER in headers:
            peer = decode_peer_header(headers[PEER_HEADER])
        peer = peer or Workload()
        src, dst = (peer, node) if inbound else (node, peer)
        src_principal, dst_principal = (remote, local) if inbound else (local, remote)
        policy = ("mutual_tls" if remote else "none") if inbound else UNKNOWN
        mtls = bool(local and remote)
        hint = None
    labels = {
        "reporter": "destination" if inbound else "source",
        "source_workload": src.workload,
        "source_workload_namespace": src.namespace,
        "source_principal": src_principal or UNKNOWN,
        "source_app": src.app,
        "source_version": src.version,
        "destination_workload": dst.workload,
        "destination_workload_namespace": dst.namespace,
        "destination_principal": dst_principal or UNKNOWN,
        "destination_app": dst.app,
        "destination_version": dst.version,
        "connection_security_policy": policy,
        "response_flags": response_flags(common),
    }
    return labels, mtls, hint


def _answered_without_route(labels: dict, common) -> bool:
    """The source proxy (typically the ingress gateway) answered itself, 404 NR: no route, no cluster."""
    return (
        labels["reporter"] == "source"
        and not common.upstream_cluster
        and "NR" in labels["response_flags"].split(",")
    )


def _service_labels(labels: dict, common, authority: str, hint: str | None) -> None:
    dst_ns = labels["destination_workload_namespace"]
    if _answered_without_route(labels, common):
        # Istio's stats: no route means no destination service; the Host header is not one (it would
        # put the gateway's own address, or whatever a client sent, on the graph as a service)
        hint = authority = ""
        dst_ns = UNKNOWN
    host = None
    if hint and "|" in hint:  # a cluster name (the proxy's TCP hint)
        host = _service_from_cluster(hint)
    elif hint:
        host = _host_only(hint)
    if host is None:
        host = _service_from_cluster(common.upstream_cluster)
    if host is None and authority:
        host = _host_only(authority)
    if host and "." not in host and dst_ns != UNKNOWN:
        host = f"{host}.{dst_ns}.svc.cluster.local"
    host = host or UNKNOWN
    name, ns = _split_service(host) if host != UNKNOWN else (UNKNOWN, UNKNOWN)
    labels["destination_service"] = host
    labels["destination_service_name"] = name
    labels["destination_service_namespace"] = ns


def http_report(node: Workload, entry) -> Report:
    common = entry.common_properties
    inbound = common.upstream_cluster.startswith("inbound|")
    isthmus = common.metadata.filter_metadata.get(ISTHMUS_METADATA)
    if isthmus is not None and "reporter" in isthmus.fields:
        inbound = isthmus.fields["reporter"].string_value == "destination"
    headers = entry.request.request_headers if inbound else entry.response.response_headers
    labels, mtls, hint = _labels(node, common, headers)
    _service_labels(labels, common, entry.request.authority, hint)
    content_type = entry.request.request_headers.get("content-type", "")
    labels["request_protocol"] = "grpc" if content_type.startswith("application/grpc") else "http"
    labels["response_code"] = (
        str(entry.response.response_code.value) if entry.response.HasField("response_code") else "0"
    )
    if common.HasField("duration"):
        duration = _duration_ms(common.duration)
    else:
        duration = _duration_ms(common.time_to_last_downstream_tx_byte)
    return Report(
        "http",
        {n: labels[n] for n in REQUEST_LABELS},
        mtls,
        duration_ms=duration,
        request_bytes=entry.request.request_headers_bytes + entry.request.request_body_bytes,
        response_bytes=entry.response.response_headers_bytes + entry.response.response_body_bytes,
    )


def tcp_report(node: Workload, entry) -> Report:
    common = entry.common_properties
    labels, mtls, hint = _labels(node, common, None)
    _service_labels(labels, common, "", hint)
    labels["request_protocol"] = "tcp"
    kind = accesslog_pb2.AccessLogType.Name(common.access_log_type)
    untyped = kind == "NotSet"
    opened = kind in _OPEN_TYPES or (untyped and not common.intermediate_log_entry)
    closed = kind == "TcpConnectionEnd" or (untyped and not common.intermediate_log_entry)
    return Report(
        "tcp",
        {n: labels[n] for n in TCP_LABELS},
        mtls,
        opened=opened,
        closed=closed,
        sent_bytes=entry.connection_properties.sent_bytes if closed else 0,
        received_bytes=entry.connection_properties.received_bytes if closed else 0,
    )
