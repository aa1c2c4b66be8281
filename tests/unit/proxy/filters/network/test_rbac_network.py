"""envoy.filters.network.rbac and the read-filter guard in front of the terminal network filter.

Peer identities are fake TLS facts here (``conn.ssl`` with ``info.peer_uri_sans``, the shape of the
TLS engineer's TlsTransport); the real handshake is covered by the TLS tests.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2
from google.protobuf import json_format

from proxy.config.context import FactoryContext
from proxy.config.errors import ConfigError
from proxy.filters.network.rbac import NetworkRbacFactory, stat_prefix_join
from proxy.filters.network.read_filters import GuardedFilterFactory
from proxy.stats.store import Store

SPIFFE = "spiffe://cluster.local/ns/default/sa/sleep"


def factory(d: dict) -> tuple[NetworkRbacFactory, Store]:
    store = Store()
    d = {"stat_prefix": "tcp.", **d}
    return NetworkRbacFactory(
        json_format.ParseDict(d, rbac_pb2.RBAC()), FactoryContext(stats=store), "rbac"
    ), store


def conn(remote="10.0.0.1", local=("10.0.0.2", 9000), sni="", uris=None, tls_chain=False):
    ssl = None if uris is None else SimpleNamespace(info=SimpleNamespace(peer_uri_sans=tuple(uris)))
    c = SimpleNamespace(
        remote_address=(remote, 5555),
        local_address=local,
        original_dst=None,
        requested_server_name=sni,
        ssl=ssl,
        filter_chain=SimpleNamespace(transport_socket=object() if tls_chain else None),
        closed=0,
    )
    c.close = lambda: setattr(c, "closed", c.closed + 1)
    return c


def count(store, name):
    c = store.counters.get(name)
    return c.value if c else 0


def rules(action, perm=None, princ=None):
    return {
        "rules": {
            "action": action,
            "policies": {
                "p": {"permissions": [perm or {"any": True}], "principals": [princ or {"any": True}]}
            },
        }
    }


def test_deny_by_source_ip_and_stats():
    f, store = factory(rules("DENY", princ={"source_ip": {"address_prefix": "10.0.0.0", "prefix_len": 24}}))
    assert f.check(conn(remote="10.0.0.7")) is False
    assert f.check(conn(remote="10.0.1.7")) is True
    assert count(store, "tcp.rbac.denied") == 1 and count(store, "tcp.rbac.allowed") == 1


def test_allow_by_destination_port_and_sni():
    perm = {"and_rules": {"rules": [{"destination_port": 9000}, {"requested_server_name": {"exact": "db"}}]}}
    f, _ = factory(rules("ALLOW", perm=perm))
    assert f.check(conn(sni="db"))
    assert not f.check(conn(sni="web"))
    assert not f.check(conn(sni="db", local=("10.0.0.2", 9001)))


def test_allow_by_principal_after_the_handshake():
    f, _ = factory(rules("ALLOW", princ={"authenticated": {"principal_name": {"exact": SPIFFE}}}))
    assert f.check(conn(uris=[SPIFFE]))
    assert not f.check(conn(uris=["spiffe://cluster.local/ns/x/sa/y"]))
    assert not f.check(conn())  # plaintext


def test_header_rules_never_match_on_connections():
    f, _ = factory(rules("ALLOW", perm={"header": {"name": ":method", "exact_match": "GET"}}))
    assert not f.check(conn())


def test_shadow_rules_counted_under_their_prefix():
    f, store = factory(
        {
            "shadow_rules": {
                "action": "DENY",
                "policies": {"s": {"permissions": [{"any": True}], "principals": [{"any": True}]}},
            },
            "shadow_rules_stat_prefix": "dry_",
        }
    )
    assert f.check(conn())
    assert count(store, "tcp.rbac.dry_shadow_denied") == 1


def test_stat_prefix_join():
    assert stat_prefix_join("tcp.", "rbac.") == "tcp.rbac."
    assert stat_prefix_join("tcp", "rbac.") == "tcp.rbac."


@pytest.mark.parametrize(
    "d,path",
    [
        ({"stat_prefix": ""}, "rbac.stat_prefix"),
        ({"enforcement_type": "CONTINUOUS"}, "rbac.enforcement_type"),
        ({"delay_deny": "1s"}, "rbac.delay_deny"),
        ({"matcher": {}}, "rbac.matcher"),
        (
            rules("ALLOW", princ={"remote_ip": {"address_prefix": "x"}}),
            "rbac.rules.policies[p].principals[0].remote_ip",
        ),
    ],
)
def test_bad_config_rejected_by_path(d, path):
    with pytest.raises(ConfigError) as e:
        factory(d)
    assert e.value.path == path


# ------------------------------------------------------------------ the guard before the terminal


class Terminal:
    def __init__(self):
        self.events = []
        self.draining = False

    def create(self, c):
        self.conn = c
        return self

    def on_new_connection(self, c):
        self.events.append("new")

    def on_data(self, data):
        self.events.append(data)

    def on_eof(self):
        self.events.append("eof")

    def on_connection_lost(self, exc):
        self.events.append("lost")

    def on_drain_started(self):
        self.events.append("drain")


def guard(allow: bool):
    reader = SimpleNamespace(terminal=False, check=lambda c: allow)
    term = Terminal()
    return GuardedFilterFactory([reader], term), term


def test_plaintext_denied_at_accept_terminal_never_created():
    g, term = guard(False)
    c = conn()
    f = g.create(c)
    f.on_new_connection(c)
    f.on_data(b"GET / HTTP/1.1\r\n")
    f.on_eof()
    f.on_connection_lost(None)
    f.on_drain_started()
    assert c.closed == 1 and term.events == []
    assert not hasattr(f, "draining")  # the listener then calls on_drain_started, a no-op


def test_plaintext_allowed_forwards_everything():
    g, term = guard(True)
    c = conn()
    f = g.create(c)
    f.on_new_connection(c)
    f.on_data(b"x")
    f.on_eof()
    f.draining = True  # graceful drain of an HTTP terminal
    assert term.events == ["new", b"x", "eof"] and term.draining and c.closed == 0


def test_tls_chain_decides_on_first_decrypted_bytes():
    seen = []
    reader = SimpleNamespace(terminal=False, check=lambda c: seen.append(c.ssl) or c.ssl is not None)
    term = Terminal()
    c = conn(tls_chain=True)
    f = GuardedFilterFactory([reader], term).create(c)
    f.on_new_connection(c)
    assert seen == [] and term.events == ["new"]  # not decided before the handshake
    c.ssl = SimpleNamespace(info=SimpleNamespace(peer_uri_sans=(SPIFFE,)))
    f.on_data(b"hello")
    f.on_data(b"again")
    assert len(seen) == 1 and term.events == ["new", b"hello", b"again"]


def test_tls_chain_denied_drops_data_and_closes():
    g, term = guard(False)
    c = conn(tls_chain=True)
    f = g.create(c)
    f.on_new_connection(c)
    f.on_data(b"secret")
    assert c.closed == 1 and term.events == ["new"]


def test_listener_requires_the_terminal_filter_last():
    from envoy.config.listener.v3 import listener_pb2

    from proxy.config.registry import load_builtin_extensions
    from proxy.core.listener import Listener

    load_builtin_extensions()
    tcp = {
        "name": "envoy.filters.network.tcp_proxy",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "stat_prefix": "t",
            "cluster": "c",
        },
    }
    rbac = {
        "name": "envoy.filters.network.rbac",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC",
            "stat_prefix": "r",
        },
    }

    def build(filters):
        proto = json_format.ParseDict(
            {
                "name": "l",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                "filter_chains": [{"filters": filters}],
            },
            listener_pb2.Listener(),
        )
        from tests.unit.proxy.filters.http.fakes import context

        ctx, _ = context()
        return Listener(proto, ctx, "l")

    with pytest.raises(ConfigError) as e:
        build([tcp, rbac])
    assert e.value.path == "l.filter_chains[0].filters[0]"
    with pytest.raises(ConfigError) as e:
        build([rbac])
    assert e.value.path == "l.filter_chains[0].filters[0]"
    lst = build([rbac, tcp])
    assert isinstance(lst.chains[0][1].factory, GuardedFilterFactory)
