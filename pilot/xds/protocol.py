"""What a DiscoveryRequest means, per the xDS protocol (pure).

SotW (https://www.envoyproxy.io/docs/envoy/latest/api-docs/xds_protocol): the first request for a type
subscribes; afterwards a request whose ``response_nonce`` is not the latest nonce sent is stale and
ignored; one with the latest nonce ACKs it, or NACKs it when ``error_detail`` is set; an ACK whose
``resource_names`` differ from the watched ones also changes the subscription and gets a response.
Delta: subscribe/unsubscribe lists always apply; the nonce only decides whether it is an ACK/NACK.
"""

from __future__ import annotations

from dataclasses import dataclass

from pilot.xds.resources import WILDCARD_TYPES
from pilot.xds.status import WatchState

NEW = "new"  # first request for this type on this stream: respond
ACK = "ack"
NACK = "nack"
STALE_NONCE = "stale"  # ignored
RESUBSCRIBE = "resubscribe"  # ACK that also changes the names: respond
EMPTY_NONCE = "retry"  # a request without a nonce on a known type (e.g. after a NACK): respond


@dataclass(frozen=True)
class Decision:
    kind: str
    respond: bool
    names: frozenset[str] = frozenset()
    error: str = ""


def sotw(state: WatchState | None, type_url: str, names: list[str], nonce: str, error: str) -> Decision:
    wanted = frozenset(n for n in names if n != "*")
    if state is None:
        return Decision(NEW, True, wanted)
    if not nonce:
        return Decision(EMPTY_NONCE, True, wanted)
    if nonce != state.nonce_sent:
        return Decision(STALE_NONCE, False, state.names)
    if error:
        return Decision(NACK, False, wanted, error)
    if wanted != state.names:
        return Decision(RESUBSCRIBE, True, wanted)
    return Decision(ACK, False, wanted)


def is_wildcard(type_url: str, names: frozenset[str], explicit_star: bool) -> bool:
    """LDS and CDS with no names (or '*') want everything; other types only what they name."""
    return explicit_star or (type_url in WILDCARD_TYPES and not names)


@dataclass(frozen=True)
class DeltaDecision:
    kind: str  # NEW, ACK, NACK, STALE_NONCE, or RESUBSCRIBE when only the subscription changed
    respond: bool
    names: frozenset[str]
    wildcard: bool
    error: str = ""


def delta(
    state: WatchState | None,
    type_url: str,
    subscribe: list[str],
    unsubscribe: list[str],
    nonce: str,
    error: str,
) -> DeltaDecision:
    star = "*" in subscribe
    if state is None:
        names = frozenset(n for n in subscribe if n != "*")
        return DeltaDecision(NEW, True, names, is_wildcard(type_url, names, star))
    names = (state.names | {n for n in subscribe if n != "*"}) - set(unsubscribe)
    wildcard = (state.wildcard or star) and "*" not in unsubscribe
    changed = names != state.names or wildcard != state.wildcard
    if nonce and nonce == state.nonce_sent:
        if error:
            return DeltaDecision(NACK, changed, names, wildcard, error)
        return DeltaDecision(ACK if not changed else RESUBSCRIBE, changed, names, wildcard)
    if nonce:
        return DeltaDecision(STALE_NONCE, changed, names, wildcard)
    return DeltaDecision(RESUBSCRIBE if changed else ACK, changed, names, wildcard)
