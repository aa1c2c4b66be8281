"""Per-request (or per-TCP-connection) facts shared by the connection manager, the filters and the
access loggers, modelled on Envoy's ``StreamInfo``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from proxy.core.headers import Headers

_time, _monotonic = time.time, time.monotonic

# Envoy's short response flags, in the order Envoy prints them (comma-separated) in %RESPONSE_FLAGS%.
RESPONSE_FLAG_ORDER = (
    "LH",
    "UH",
    "UT",
    "LR",
    "UR",
    "UF",
    "UC",
    "UO",
    "NR",
    "DI",
    "FI",
    "RL",
    "UAEX",
    "RLSE",
    "DC",
    "URX",
    "SI",
    "IH",
    "DPE",
    "UMSDR",
    "RFCF",
    "NFCF",
    "DT",
    "UPE",
    "NC",
    "OM",
    "DF",
    "DO",
)


@dataclass(slots=True, init=False)
class StreamInfo:
    downstream_remote_address: tuple[str, int] | None = None
    downstream_local_address: tuple[str, int] | None = None
    start_time: float = field(default_factory=time.time)
    start_monotonic: float = field(default_factory=time.monotonic)
    end_monotonic: float | None = None
    protocol: str = "HTTP/1.1"  # "HTTP/1.0", "HTTP/1.1", or "" for TCP
    request_headers: Headers | None = None
    response_headers: Headers | None = None
    response_code: int = 0  # 0 = no response sent (as Envoy prints it)
    response_code_details: str = ""
    response_flags: set[str] = field(default_factory=set)
    bytes_received: int = 0
    bytes_sent: int = 0
    upstream_host: str | None = None  # "ip:port"
    upstream_cluster: str | None = None
    route_name: str | None = None
    upstream_request_attempts: int = 0
    filter_state: dict = field(default_factory=dict)
    # The downstream connection's TLS facts (Envoy's downstream sslConnection()): the connection's
    # ``ssl`` object (proxy.tls's TlsTransport, whose ``info`` is a TlsConnectionInfo with
    # ``peer_uri_sans``/``local_uri_sans``), or such an info object itself; None on plaintext.
    downstream_ssl: object | None = None

    # Written out instead of the dataclass's generated __init__: one is built per request, and the
    # generated one calls four default factories through sentinel checks (4.4 -> 2 us).
    def __init__(
        self,
        downstream_remote_address: tuple[str, int] | None = None,
        downstream_local_address: tuple[str, int] | None = None,
        start_time: float | None = None,
        start_monotonic: float | None = None,
        end_monotonic: float | None = None,
        protocol: str = "HTTP/1.1",
        request_headers: Headers | None = None,
        response_headers: Headers | None = None,
        response_code: int = 0,
        response_code_details: str = "",
        response_flags: set[str] | None = None,
        bytes_received: int = 0,
        bytes_sent: int = 0,
        upstream_host: str | None = None,
        upstream_cluster: str | None = None,
        route_name: str | None = None,
        upstream_request_attempts: int = 0,
        filter_state: dict | None = None,
        downstream_ssl: object | None = None,
    ) -> None:
        self.downstream_remote_address = downstream_remote_address
        self.downstream_local_address = downstream_local_address
        self.start_time = _time() if start_time is None else start_time
        self.start_monotonic = _monotonic() if start_monotonic is None else start_monotonic
        self.end_monotonic = end_monotonic
        self.protocol = protocol
        self.request_headers = request_headers
        self.response_headers = response_headers
        self.response_code = response_code
        self.response_code_details = response_code_details
        self.response_flags = set() if response_flags is None else response_flags
        self.bytes_received = bytes_received
        self.bytes_sent = bytes_sent
        self.upstream_host = upstream_host
        self.upstream_cluster = upstream_cluster
        self.route_name = route_name
        self.upstream_request_attempts = upstream_request_attempts
        self.filter_state = {} if filter_state is None else filter_state
        self.downstream_ssl = downstream_ssl

    def set_flag(self, flag: str) -> None:
        self.response_flags.add(flag)

    def flags_string(self) -> str:
        """%RESPONSE_FLAGS%: comma-separated in Envoy's order, or "-" when none."""
        if not self.response_flags:
            return "-"
        return ",".join(f for f in RESPONSE_FLAG_ORDER if f in self.response_flags)

    def finish(self) -> None:
        if self.end_monotonic is None:
            self.end_monotonic = time.monotonic()

    def duration_ms(self) -> int:
        end = self.end_monotonic if self.end_monotonic is not None else time.monotonic()
        return int((end - self.start_monotonic) * 1000)
