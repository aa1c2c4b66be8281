"""Filter-chain selection in Envoy's order of precedence (pure: no sockets)."""

from __future__ import annotations

import pytest
from envoy.config.listener.v3 import listener_components_pb2
from google.protobuf import json_format

from proxy.config.errors import ConfigError
from proxy.core.listener import ConnectionFacts, compile_chain_match, select_filter_chain


def chains(*matches):
    out = []
    for i, m in enumerate(matches):
        msg = json_format.ParseDict(m, listener_components_pb2.FilterChainMatch())
        out.append((compile_chain_match(msg, f"filter_chains[{i}].filter_chain_match"), f"chain{i}"))
    return out


def pick(cs, **facts):
    return select_filter_chain(cs, ConnectionFacts(**facts))


def test_destination_port_beats_everything_else():
    cs = chains({"server_names": ["a.example.com"]}, {"destination_port": 8443})
    # The port-specific chain wins even though the other matches the SNI more specifically.
    assert pick(cs, local_port=8443, server_name="a.example.com") == "chain1"
    assert pick(cs, local_port=9000, server_name="a.example.com") == "chain0"


def test_no_backtracking_after_a_more_specific_level_matched():
    # Envoy: once the port-specific group is chosen, a later mismatch means no chain (default chain).
    cs = chains({"destination_port": 80, "transport_protocol": "tls"}, {})
    assert pick(cs, local_port=80, transport_protocol="raw_buffer") is None
    assert pick(cs, local_port=81, transport_protocol="raw_buffer") == "chain1"


def test_longest_destination_prefix_wins():
    cs = chains(
        {"prefix_ranges": [{"address_prefix": "10.0.0.0", "prefix_len": 8}]},
        {"prefix_ranges": [{"address_prefix": "10.1.0.0", "prefix_len": 16}]},
        {},
    )
    assert pick(cs, local_ip="10.1.2.3") == "chain1"
    assert pick(cs, local_ip="10.2.2.3") == "chain0"
    assert pick(cs, local_ip="192.168.0.1") == "chain2"


def test_server_names_exact_then_longest_wildcard_then_any():
    cs = chains(
        {"server_names": ["*.com"]},
        {"server_names": ["*.example.com"]},
        {"server_names": ["api.example.com"]},
        {},
    )
    assert pick(cs, server_name="api.example.com") == "chain2"
    assert pick(cs, server_name="www.example.com") == "chain1"
    assert pick(cs, server_name="foo.com") == "chain0"
    assert pick(cs, server_name="foo.org") == "chain3"
    assert pick(cs, server_name="") == "chain3"
    # A wildcard needs at least one label before the suffix.
    assert pick(chains({"server_names": ["*.example.com"]}), server_name="example.com") is None


def test_transport_protocol_then_application_protocols():
    cs = chains(
        {"transport_protocol": "tls", "application_protocols": ["h2"]},
        {"transport_protocol": "tls"},
        {"application_protocols": ["http/1.1"]},
        {},
    )
    assert pick(cs, transport_protocol="tls", application_protocols=["h2", "http/1.1"]) == "chain0"
    assert pick(cs, transport_protocol="tls", application_protocols=["http/1.1"]) == "chain1"
    assert pick(cs, transport_protocol="raw_buffer", application_protocols=["http/1.1"]) == "chain2"
    assert pick(cs, transport_protocol="raw_buffer") == "chain3"


def test_client_alpn_order_decides_between_chains():
    cs = chains({"application_protocols": ["http/1.1"]}, {"application_protocols": ["h2"]})
    assert pick(cs, application_protocols=["h2", "http/1.1"]) == "chain1"
    assert pick(cs, application_protocols=["http/1.1", "h2"]) == "chain0"


def test_source_type_prefix_and_port():
    cs = chains({"source_type": "SAME_IP_OR_LOOPBACK"}, {"source_type": "EXTERNAL"})
    assert pick(cs, remote_ip="127.0.0.1", local_ip="127.0.0.1") == "chain0"
    assert pick(cs, remote_ip="198.18.0.7", local_ip="198.18.0.2") == "chain1"
    cs = chains(
        {"source_prefix_ranges": [{"address_prefix": "198.18.0.0", "prefix_len": 24}]},
        {"source_ports": [4444]},
        {},
    )
    assert pick(cs, remote_ip="198.18.0.9", remote_port=4444) == "chain0"  # source IP is checked first
    assert pick(cs, remote_ip="10.0.0.1", remote_port=4444) == "chain1"  # any source IP, then the port
    assert pick(cs, remote_ip="198.18.0.9", remote_port=5555) == "chain0"


def test_source_ports_choose_among_same_source_ip():
    cs = chains({"source_ports": [4444]}, {})
    assert pick(cs, remote_port=4444) == "chain0"
    assert pick(cs, remote_port=5555) == "chain1"


def test_bad_match_config_is_rejected_with_path():
    with pytest.raises(ConfigError) as e:
        chains({"server_names": ["api.*.com"]})
    assert e.value.path == "filter_chains[0].filter_chain_match.server_names[0]"
    with pytest.raises(ConfigError) as e:
        chains({"address_suffix": "1.2.3.4"})
    assert e.value.path == "filter_chains[0].filter_chain_match.address_suffix"
