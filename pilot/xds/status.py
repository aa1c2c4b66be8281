"""Per proxy and type URL: what it watches, what was sent, and what it said back (pure).

Sync status as ``istioctl proxy-status`` shows it:

* ``NOT SENT``  nothing of this type was sent on this stream yet (or the proxy does not watch it)
* ``SYNCED``    the proxy ACKed the latest response
* ``NACKED``    the proxy rejected the latest response (``error`` holds its ``error_detail``)
* ``STALE``     a response was sent and the proxy has not answered it yet
"""

from __future__ import annotations

from dataclasses import dataclass, field

SYNCED = "SYNCED"
STALE = "STALE"
NOT_SENT = "NOT SENT"
NACKED = "NACKED"


@dataclass
class WatchState:
    type_url: str
    names: frozenset[str] = frozenset()  # subscribed names; empty + wildcard = everything
    wildcard: bool = False
    version_sent: str = ""
    nonce_sent: str = ""
    sent_at: float | None = None
    version_acked: str = ""
    nonce_acked: str = ""
    nack_nonce: str = ""
    nack_version: str = ""
    error: str = ""
    sent_count: int = 0
    # Delta: what the proxy holds, name -> version hash (as last sent, or declared on reconnect)
    resource_versions: dict[str, str] = field(default_factory=dict)

    def record_sent(self, version: str, nonce: str, now: float) -> None:
        self.version_sent, self.nonce_sent, self.sent_at = version, nonce, now
        self.sent_count += 1

    def record_ack(self, nonce: str) -> None:
        self.nonce_acked, self.version_acked = nonce, self.version_sent
        self.error = ""

    def record_nack(self, nonce: str, message: str) -> None:
        self.nack_nonce, self.nack_version, self.error = nonce, self.version_sent, message

    @property
    def status(self) -> str:
        if not self.nonce_sent:
            return NOT_SENT
        if self.nack_nonce and self.nack_nonce == self.nonce_sent:
            return NACKED
        if self.nonce_acked == self.nonce_sent:
            return SYNCED
        return STALE

    def to_json(self) -> dict:
        out = {
            "status": self.status,
            "version_sent": self.version_sent,
            "nonce_sent": self.nonce_sent,
            "version_acked": self.version_acked,
            "nonce_acked": self.nonce_acked,
            "names": sorted(self.names),
            "wildcard": self.wildcard,
        }
        if self.status == NACKED:
            out["error"] = self.error
            out["nack_version"] = self.nack_version
        return out
