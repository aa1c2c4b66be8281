"""Peer certificate facts (SANs, subject, the per-request memo) read once per certificate and context."""

from __future__ import annotations

from proxy.tls import transport, xfcc
from proxy.tls.transport import PeerFacts, peer_facts
from tests.unit.proxy.tls.certs import make_ca
from tests.unit.proxy.tls.test_context import ALICE
from tests.unit.proxy.tls.test_transport import BOB, client_ctx, server_ctx
from tests.unit.proxy.tls.test_transport_resumption import _connect


def test_connections_from_one_peer_certificate_share_its_facts_and_xfcc_element():
    ca = make_ca()
    server_built, client_built = server_ctx(ca), client_ctx(ca)
    s1, _ = _connect(server_built, client_built)
    s2, _ = _connect(server_built, client_built)
    assert s1.info.peer_certificate_der == s2.info.peer_certificate_der
    assert s2.info.peer_uri_sans == (ALICE,) and s2.info.local_uri_sans == (BOB,)
    cfg = xfcc.XfccConfig(mode=xfcc.APPEND_FORWARD, subject=True, uri=True)
    element = xfcc.apply(cfg, None, s1.info)
    assert s2.info.memo is s1.info.memo and s2.info.memo[cfg] == element
    assert len(server_built.peer_facts) == 1


def test_another_peer_certificate_or_a_rotated_context_reads_its_own():
    ca = make_ca()
    server_built = server_ctx(ca)
    alice, _ = _connect(server_built, client_ctx(ca))
    carol, _ = _connect(server_built, client_ctx(ca, uri="spiffe://cluster.local/ns/default/sa/carol"))
    assert carol.info.peer_uri_sans == ("spiffe://cluster.local/ns/default/sa/carol",)
    assert carol.info.memo is not alice.info.memo
    assert len(server_built.peer_facts) == 2
    rotated, _ = _connect(server_ctx(ca), client_ctx(ca))
    assert rotated.info.peer_uri_sans == (ALICE,) and rotated.info.memo is not alice.info.memo


def test_no_peer_certificate_gets_a_memo_of_its_own():
    ca = make_ca()
    server_built = server_ctx(ca, require=False)
    a, _ = _connect(server_built, client_ctx(ca, uri=None))
    b, _ = _connect(server_built, client_ctx(ca, uri=None))
    assert not a.info.peer_certificate_presented and a.info.peer_sans.all == ()
    assert a.info.memo is not b.info.memo
    assert not server_built.peer_facts


def test_unparsable_der_has_no_sans_and_the_cache_is_bounded(monkeypatch):
    ca = make_ca()
    built = server_ctx(ca)
    bad = peer_facts(built, b"\x30\x03\x02\x01")
    assert bad.sans.all == () and bad.subject == ""
    monkeypatch.setattr(transport, "PEER_FACTS_MAX", 3)
    for i in range(7):
        assert isinstance(peer_facts(built, b"\x30\x01" + bytes([i])), PeerFacts)
    assert len(built.peer_facts) <= 3
