"""Client session resumption (Envoy's max_session_keys: 1) and the record read loop of TlsSession."""

from __future__ import annotations

import ssl

import pytest

from proxy.stats.store import Store
from proxy.tls import transport, xfcc
from proxy.tls.transport import TlsSession, tls_stats
from tests.unit.proxy.tls.certs import make_ca
from tests.unit.proxy.tls.test_context import ALICE
from tests.unit.proxy.tls.test_transport import BOB, client_ctx, pump, server_ctx

SNI = "outbound_.9080_._.bob.default.svc.cluster.local"


def _connect(server_built, client_built, sni=SNI) -> tuple[TlsSession, TlsSession]:
    server, client = TlsSession(server_built), TlsSession(client_built, server_hostname=sni)
    client.start()
    pump(client, server)
    # The TLS 1.3 tickets arrive with the server's first flight after the handshake; an exchange
    # lets the client read them, as a first request does.
    client.send(b"GET")
    server.send(b"200")
    assert pump(client, server) == (b"200", b"GET")
    return server, client


def test_second_connection_resumes_and_keeps_the_peer_identities():
    ca = make_ca()
    server_built, client_built = server_ctx(ca), client_ctx(ca)
    s1, c1 = _connect(server_built, client_built)
    assert not c1.session_reused and not s1.session_reused
    assert SNI in client_built.session_cache
    s2, c2 = _connect(server_built, client_built)
    assert c2.session_reused and s2.session_reused
    # What SAN checks, XFCC and RBAC read is the same on a resumed session.
    assert s2.info.peer_uri_sans == (ALICE,) and c2.info.peer_uri_sans == (BOB,)
    assert s2.info.peer_certificate_der == s1.info.peer_certificate_der
    assert s2.info.local_uri_sans == (BOB,)


def _count_session_reads(monkeypatch) -> list[int]:
    """Count reads of SSLObject.session (each one re-parses the session and its peer certificate)."""
    reads = [0]
    prop = ssl.SSLObject.session

    def getter(obj):
        reads[0] += 1
        return prop.fget(obj)

    monkeypatch.setattr(ssl.SSLObject, "session", property(getter, prop.fset))
    return reads


def test_a_full_handshake_reads_the_session_once_when_the_ticket_came(monkeypatch):
    reads = _count_session_reads(monkeypatch)
    ca = make_ca()
    client_built = client_ctx(ca)
    _connect(server_ctx(ca), client_built)
    # Not in the feed that ended the TLS 1.3 handshake (no ticket can be there yet): once, after.
    assert reads[0] == 1
    assert client_built.session_cache[SNI].has_ticket


def test_a_resumed_fresh_session_is_kept_without_reading_the_new_ticket(monkeypatch):
    ca = make_ca()
    server_built, client_built = server_ctx(ca), client_ctx(ca)
    _connect(server_built, client_built)
    first = client_built.session_cache[SNI]
    reads = _count_session_reads(monkeypatch)
    for _ in range(3):
        _, c = _connect(server_built, client_built)
        assert c.session_reused
    assert reads[0] == 0
    assert client_built.session_cache[SNI] is first


def test_a_session_past_half_its_lifetime_is_replaced_by_the_new_ticket(monkeypatch):
    ca = make_ca()
    server_built, client_built = server_ctx(ca), client_ctx(ca)
    _connect(server_built, client_built)
    first = client_built.session_cache[SNI]
    later = first.time + first.ticket_lifetime_hint / 2 + 1
    monkeypatch.setattr(transport.time, "time", lambda: later)
    _, c = _connect(server_built, client_built)
    assert c.session_reused
    newer = client_built.session_cache[SNI]
    assert newer is not first and newer.has_ticket and newer.id != first.id
    # The newer one resumes too.
    _, c = _connect(server_built, client_built)
    assert c.session_reused


def test_no_resumption_across_sni_or_a_rebuilt_context():
    ca = make_ca()
    server_built, client_built = server_ctx(ca), client_ctx(ca)
    _connect(server_built, client_built)
    _, other_sni = _connect(server_built, client_built, sni="outbound_.9080_._.carol.default.svc")
    assert not other_sni.session_reused
    # A secret rotation builds a new client context (and a new server one): nothing carries over.
    _, rotated = _connect(server_ctx(ca), client_ctx(ca))
    assert not rotated.session_reused


def test_server_with_a_new_context_does_not_accept_old_tickets():
    ca = make_ca()
    client_built = client_ctx(ca)
    _connect(server_ctx(ca), client_built)
    assert client_built.session_cache
    s, c = _connect(server_ctx(ca), client_built)  # the client offers the old ticket
    assert not c.session_reused and not s.session_reused
    assert s.info.peer_uri_sans == (ALICE,)


def test_session_reused_stat():
    ca = make_ca()
    store = Store()
    stats = tls_stats(store.scope("cluster.bob."))
    server_built, client_built = server_ctx(ca), client_ctx(ca)
    for _ in range(3):
        _, c = _connect(server_built, client_built)
        stats.count_handshake(c.info, c.session_reused)
    assert stats.handshake.value == 3
    assert stats.session_reused.value == 2


@pytest.mark.parametrize("split", [1, 7, 100])
def test_records_split_and_joined_anywhere(split):
    ca = make_ca()
    server, client = _connect(server_ctx(ca), client_ctx(ca))
    payload = [bytes([i]) * (i * 997 % 20000 + 1) for i in range(12)]  # some above one 16 KB record
    for p in payload:
        client.send(p)
    wire = client.output()
    got = b""
    for i in range(0, len(wire), split * 50):
        got += server.feed(wire[i : i + split * 50]).plaintext
    assert got == b"".join(payload)


def test_close_notify_after_data_in_one_feed():
    ca = make_ca()
    server, client = _connect(server_ctx(ca), client_ctx(ca))
    client.send(b"last words")
    client.close()
    result = server.feed(client.output())
    assert result.plaintext == b"last words" and result.peer_closed


def test_xfcc_element_is_computed_once_per_connection():
    ca = make_ca()
    server, _ = _connect(server_ctx(ca), client_ctx(ca))
    cfg = xfcc.XfccConfig(mode=xfcc.APPEND_FORWARD, subject=True, uri=True)
    first = xfcc.apply(cfg, None, server.info)
    assert first.startswith(f"By={BOB};Hash=") and first.endswith(f';Subject="";URI={ALICE}')
    assert server.info.memo[cfg] == first
    assert xfcc.apply(cfg, "By=x", server.info) == f"By=x,{first}"
    other = xfcc.XfccConfig(mode=xfcc.SANITIZE_SET, dns=True)
    assert xfcc.apply(other, "By=x", server.info) == first.split(";Subject")[0]
