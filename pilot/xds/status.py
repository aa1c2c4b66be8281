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
MAX_PENDING = 64  # Delta responses in flight per watch that are tracked one by one


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
    content_sent: str = ""  # SotW: digest of the resources in the latest response (see XdsCache.digest)
    # Delta: what the proxy holds for sure, name -> version hash (ACKed, or declared on reconnect)
    resource_versions: dict[str, str] = field(default_factory=dict)
    # Delta: responses not answered yet, nonce -> (name -> version sent, names removed). An ACK folds
    # its entry into resource_versions; a NACK drops it, so what the proxy rejected is sent again.
    pending: dict[str, tuple[dict[str, str], frozenset[str]]] = field(default_factory=dict)

    def record_sent(self, version: str, nonce: str, now: float) -> None:
        self.version_sent, self.nonce_sent, self.sent_at = version, nonce, now
        self.sent_count += 1

    def record_ack(self, nonce: str) -> None:
        self.nonce_acked, self.version_acked = nonce, self.version_sent
        self.error = ""

    def record_nack(self, nonce: str, message: str) -> None:
        self.nack_nonce, self.nack_version, self.error = nonce, self.version_sent, message

    # -- Delta: what the proxy holds ------------------------------------------------------------------
    def expected_versions(self) -> dict[str, str]:
        """What the proxy will hold once it accepts every response in flight (the base of the next
        diff, so an unanswered response is not sent twice)."""
        held = dict(self.resource_versions)
        for updated, removed in self.pending.values():
            held.update(updated)
            for name in removed:
                held.pop(name, None)
        return held

    def record_delta_sent(self, nonce: str, updated: dict[str, str], removed: frozenset[str]) -> None:
        self.pending[nonce] = (updated, removed)
        while len(self.pending) > MAX_PENDING:  # a proxy that never answers: assume it took the oldest
            oldest = next(iter(self.pending))
            self._apply(*self.pending.pop(oldest))

    def settle(self, nonce: str, accepted: bool) -> None:
        """The proxy answered the response `nonce` (any of those in flight, not only the latest)."""
        entry = self.pending.pop(nonce, None)
        if entry is not None and accepted:
            self._apply(*entry)

    def forget(self, names) -> None:
        """Unsubscribed names: the proxy drops them."""
        for name in names:
            self.resource_versions.pop(name, None)
            for updated, _ in self.pending.values():
                updated.pop(name, None)

    def _apply(self, updated: dict[str, str], removed: frozenset[str]) -> None:
        self.resource_versions.update(updated)
        for name in removed:
            self.resource_versions.pop(name, None)

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
