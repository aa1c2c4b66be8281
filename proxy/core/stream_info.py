"""Per-request (or per-TCP-connection) facts shared by the connection manager, the filters and the
access loggers, modelled on Envoy's ``StreamInfo``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from proxy.core.headers import Headers

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


@dataclass(slots=True)
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
