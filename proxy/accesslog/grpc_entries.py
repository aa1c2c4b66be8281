"""StreamInfo -> Envoy's ``HTTPAccessLogEntry`` / ``TCPAccessLogEntry``, with Istio's peer metadata
(docs/mixer.md, "Istio's labels"). Pure: no I/O; called on the request path, so kept cheap."""

from __future__ import annotations

import base64
import binascii

from envoy.config.core.v3 import base_pb2
from envoy.data.accesslog.v3 import accesslog_pb2
from google.protobuf import json_format, struct_pb2

PEER_METADATA_HEADER = "x-envoy-peer-metadata"
METADATA_NAMESPACE = "isthmus"
# StreamInfo.filter_state keys written by istio.metadata_exchange (proxy/filters/http/peer_metadata)
DOWNSTREAM_PEER = "downstream_peer"
UPSTREAM_PEER = "upstream_peer"
_TLS_VERSIONS = {"TLSv1": 1, "TLSv1.1": 2, "TLSv1.2": 3, "TLSv1.3": 4}

# Envoy's short flag -> the ResponseFlags field (UAEX is a message, handled apart).
FLAG_FIELDS = {
    "LH": "failed_local_healthcheck",
    "UH": "no_healthy_upstream",
    "UT": "upstream_request_timeout",
    "LR": "local_reset",
    "UR": "upstream_remote_reset",
    "UF": "upstream_connection_failure",
    "UC": "upstream_connection_termination",
    "UO": "upstream_overflow",
    "NR": "no_route_found",
    "DI": "delay_injected",
    "FI": "fault_injected",
    "RL": "rate_limited",
    "RLSE": "rate_limit_service_error",
    "DC": "downstream_connection_termination",
    "URX": "upstream_retry_limit_exceeded",
    "SI": "stream_idle_timeout",
    "IH": "invalid_envoy_request_headers",
    "DPE": "downstream_protocol_error",
    "UMSDR": "upstream_max_stream_duration_reached",
    "RFCF": "response_from_cache_filter",
    "NFCF": "no_filter_config_found",
    "DT": "duration_timeout",
    "UPE": "upstream_protocol_error",
    "NC": "no_cluster_found",
    "OM": "overload_manager",
    "DF": "dns_resolution_failure",
}
_METHODS = {name: value for name, value in base_pb2.RequestMethod.items() if value}
_HTTP_VERSIONS = {"HTTP/1.0": 1, "HTTP/1.1": 2, "HTTP/2": 3, "HTTP/3": 4}


# --- Istio's workload facts -----------------------------------------------------------------------


def workload_from_node_metadata(md: dict) -> dict[str, str]:
    """Istio's node metadata (WORKLOAD_NAME, NAMESPACE, LABELS, SERVICE_ACCOUNT) -> label values."""
    labels = md.get("LABELS") or {}
    if not isinstance(labels, dict):
        labels = {}
    return {
        "workload": str(md.get("WORKLOAD_NAME") or ""),
        "namespace": str(md.get("NAMESPACE") or ""),
        "app": str(labels.get("app") or labels.get("app.kubernetes.io/name") or ""),
        "version": str(labels.get("version") or labels.get("app.kubernetes.io/version") or ""),
        "service_account": str(md.get("SERVICE_ACCOUNT") or ""),
        "principal": "",
    }


EMPTY_WORKLOAD = workload_from_node_metadata({})


class PeerMetadataDecoder:
    """Decodes ``x-envoy-peer-metadata`` (base64 of a serialized Struct); results are memoised by
    header value (peers send the same value every time), bounded."""

    def __init__(self, max_entries: int = 1024) -> None:
        self._cache: dict[str, dict[str, str]] = {}
        self.max_entries = max_entries

    def decode(self, value: str | None) -> dict[str, str]:
        if not value:
            return EMPTY_WORKLOAD
        hit = self._cache.get(value)
        if hit is not None:
            return hit
        try:
            s = struct_pb2.Struct()
            s.ParseFromString(base64.b64decode(value, validate=True))
            result = workload_from_node_metadata(json_format.MessageToDict(s))
        except (binascii.Error, ValueError, Exception):
            result = EMPTY_WORKLOAD
        if len(self._cache) >= self.max_entries:
            self._cache.clear()
        self._cache[value] = result
        return result


def encode_peer_metadata(node_metadata: dict) -> str:
    """The header value a peer sends (used by tests and by a metadata-exchange filter)."""
    s = struct_pb2.Struct()
    s.update(node_metadata)
    return base64.b64encode(s.SerializeToString()).decode("ascii")


def _host_only(authority: str) -> str:
    if authority.startswith("["):
        end = authority.find("]")
        return authority[: end + 1] if end > 0 else authority
    host, sep, port = authority.rpartition(":")
    return host if sep and port.isdigit() else authority


def _set_workload(struct: struct_pb2.Struct, key: str, w: dict[str, str]) -> None:
    sub = struct.fields[key].struct_value
    for k, v in w.items():
        sub.fields[k].string_value = v


def ssl_info(ssl):
    """The TLS facts behind ``StreamInfo.downstream_ssl`` (a TlsTransport's ``info``, or an object
    with ``peer_uri_sans``/``local_uri_sans`` itself); None on plaintext or before the handshake."""
    if ssl is None:
        return None
    if hasattr(ssl, "info") and not hasattr(ssl, "peer_uri_sans"):
        return ssl.info
    return ssl


def _first(sans) -> str:
    return sans[0] if sans else ""


def discovered_peer(si, inbound: bool) -> dict[str, str] | None:
    """The peer the metadata-exchange filter (istio.metadata_exchange) stored in
    ``si.filter_state``: ``downstream_peer`` inbound (the caller), ``upstream_peer`` outbound (the
    callee), each the peer's node metadata as a dict; None when the filter learnt nothing."""
    state = si.filter_state
    if not state:
        return None
    md = state.get(DOWNSTREAM_PEER if inbound else UPSTREAM_PEER)
    return workload_from_node_metadata(md) if isinstance(md, dict) else None


def istio_metadata(
    si, local: dict[str, str], inbound: bool, peer: dict[str, str], destination_service: str
) -> struct_pb2.Struct:
    """Istio's labels for one entry. The peer is the one the metadata-exchange filter discovered,
    else ``peer`` (the caller's guess, from a header). Principals and the security policy come from
    the downstream TLS facts, which describe the caller only on the destination side (inbound)."""
    found = discovered_peer(si, inbound)
    if found is not None:
        peer = found
    policy = "none"
    info = ssl_info(getattr(si, "downstream_ssl", None))
    if inbound and info is not None:
        peer_principal = _first(getattr(info, "peer_uri_sans", ()))
        local_principal = _first(getattr(info, "local_uri_sans", ()))
        if peer_principal or local_principal:
            peer = {**peer, "principal": peer_principal}
            local = {**local, "principal": local_principal}
        if getattr(info, "peer_certificate_presented", bool(peer_principal)):
            policy = "mutual_tls"
    s = struct_pb2.Struct()
    s.fields["reporter"].string_value = "destination" if inbound else "source"
    _set_workload(s, "source", peer if inbound else local)
    _set_workload(s, "destination", local if inbound else peer)
    s.fields["destination_service"].string_value = destination_service
    s.fields["connection_security_policy"].string_value = policy
    return s


# --- entries ----------------------------------------------------------------------------------------


def _socket(addr_msg, addr) -> None:
    if addr:
        sa = addr_msg.socket_address
        sa.address = addr[0]
        sa.port_value = int(addr[1] or 0)


def _upstream(addr_msg, host: str | None) -> None:
    if not host:
        return
    ip, sep, port = host.rpartition(":")
    if sep and port.isdigit():
        sa = addr_msg.socket_address
        sa.address = ip.strip("[]")
        sa.port_value = int(port)


def _tls_properties(tls, info) -> None:
    """Envoy's ``TLSProperties`` from the downstream connection's TLS facts."""
    version = _TLS_VERSIONS.get(getattr(info, "version", "") or "")
    if version:
        tls.tls_version = version
    sni = getattr(info, "sni", "") or ""
    if sni:
        tls.tls_sni_hostname = sni
    for uri in getattr(info, "peer_uri_sans", ()) or ():
        tls.peer_certificate_properties.subject_alt_name.add(uri=uri)
    for uri in getattr(info, "local_uri_sans", ()) or ():
        tls.local_certificate_properties.subject_alt_name.add(uri=uri)
    subject = getattr(info, "peer_subject", "") or ""
    if subject:
        tls.peer_certificate_properties.subject = subject


def fill_common(common, si) -> None:
    _socket(common.downstream_remote_address, si.downstream_remote_address)
    _socket(common.downstream_local_address, si.downstream_local_address)
    common.start_time.FromNanoseconds(int(si.start_time * 1e9))
    end = si.end_monotonic if si.end_monotonic is not None else si.start_monotonic
    dur_ns = max(0, int((end - si.start_monotonic) * 1e9))
    common.duration.FromNanoseconds(dur_ns)
    common.time_to_last_downstream_tx_byte.FromNanoseconds(dur_ns)
    _upstream(common.upstream_remote_address, si.upstream_host)
    if si.upstream_cluster:
        common.upstream_cluster = si.upstream_cluster
    if si.route_name:
        common.route_name = si.route_name
    if si.upstream_request_attempts:
        common.upstream_request_attempt_count = si.upstream_request_attempts
    info = ssl_info(getattr(si, "downstream_ssl", None))
    if info is not None:
        _tls_properties(common.tls_properties, info)
    flags = common.response_flags
    for f in si.response_flags:
        name = FLAG_FIELDS.get(f)
        if name is not None:
            setattr(flags, name, True)
        elif f == "UAEX":
            flags.unauthorized_details.reason = accesslog_pb2.ResponseFlags.Unauthorized.EXTERNAL_SERVICE


def http_entry(
    si, request_headers_to_log: tuple[str, ...] = (), response_headers_to_log: tuple[str, ...] = ()
) -> accesslog_pb2.HTTPAccessLogEntry:
    e = accesslog_pb2.HTTPAccessLogEntry()
    fill_common(e.common_properties, si)
    e.protocol_version = _HTTP_VERSIONS.get(si.protocol, 0)
    h = si.request_headers
    req = e.request
    if h is not None:
        method = h.get(":method") or ""
        req.request_method = _METHODS.get(method, 0)
        req.scheme = h.get(":scheme") or ""
        req.authority = h.get(":authority") or ""
        req.path = h.get(":path") or ""
        for field, header in (
            ("user_agent", "user-agent"),
            ("referer", "referer"),
            ("forwarded_for", "x-forwarded-for"),
            ("request_id", "x-request-id"),
            ("original_path", "x-envoy-original-path"),
        ):
            v = h.get(header)
            if v:
                setattr(req, field, v)
        for name in request_headers_to_log:
            v = h.get(name)
            if v is not None:
                req.request_headers[name] = v
    req.request_body_bytes = si.bytes_received
    resp = e.response
    if si.response_code:
        resp.response_code.value = si.response_code
    if si.response_code_details:
        resp.response_code_details = si.response_code_details
    resp.response_body_bytes = si.bytes_sent
    rh = si.response_headers
    if rh is not None:
        for name in response_headers_to_log:
            v = rh.get(name)
            if v is not None:
                resp.response_headers[name] = v
    return e


def tcp_entry(si) -> accesslog_pb2.TCPAccessLogEntry:
    e = accesslog_pb2.TCPAccessLogEntry()
    fill_common(e.common_properties, si)
    e.connection_properties.received_bytes = si.bytes_received
    e.connection_properties.sent_bytes = si.bytes_sent
    return e


def destination_service(si) -> str:
    """Istio's destination_service: the service an ``outbound|<port>|<subset>|<host>`` cluster names
    (what a source proxy or a gateway routed to, whatever Host the client sent); else the request's
    authority (inbound: mixer completes a short name with the destination namespace); else the
    cluster."""
    cluster = si.upstream_cluster
    if cluster and cluster.startswith("outbound|"):
        host = cluster.rsplit("|", 1)[-1]
        if host:
            return host
    h = si.request_headers
    if h is not None:
        authority = h.get(":authority")
        if authority:
            return _host_only(authority)
    return si.upstream_cluster or ""
