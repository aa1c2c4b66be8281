"""The generated access-log function (operators inlined into the line's f-string, header maps read
through one dict that keeps the first value of a repeated name) prints what the plain rendering
(one getter call per operator, ``format_plain``) prints: random formats over every operator, with
alternatives, length cuts and awkward literals, against random stream infos (missing maps, repeated
and empty headers, values of unexpected types)."""

from __future__ import annotations

import random
import time

import pytest

from proxy.accesslog.formatter import SUPPORTED_OPERATORS, TextFormatter
from proxy.core.headers import Headers
from proxy.core.stream_info import StreamInfo

HEADER_OPS = ("REQ", "REQUEST_HEADER", "RESP", "RESPONSE_HEADER")
NAMES = [
    ":method",
    ":path",
    ":authority",
    "x-a",
    "X-B",
    "x-dup",
    "user-agent",
    "x-empty",
    ":status",
    "x-nope",
]
LITERALS = [" ", '"', "'", "\\", "{", "}", "{{", "%%", "\n", "\t", "é", "[", "] ", ":", "-", "x"]


def _token(rng: random.Random) -> str:
    op = rng.choice(SUPPORTED_OPERATORS)
    if op in HEADER_OPS:
        arg = rng.choice(NAMES)
        if rng.random() < 0.4:
            arg += "?" + rng.choice(NAMES)
        tok = f"%{op}({arg})"
    elif op == "START_TIME":
        tok = rng.choice(["%START_TIME", "%START_TIME(%s.%3f)", "%START_TIME(%Y-%m-%dT%H:%M:%E3SZ)"])
    elif op == "FILTER_STATE":
        tok = f"%FILTER_STATE({rng.choice(['k', 's', 'o', 'nope'])})"
    else:
        tok = f"%{op}"
    if rng.random() < 0.2:
        tok += f":{rng.randint(0, 6)}"
    return tok + "%"


def _format(rng: random.Random) -> str:
    return "".join(
        _token(rng) if rng.random() < 0.6 else rng.choice(LITERALS) for _ in range(rng.randint(0, 14))
    )


def _headers(rng: random.Random) -> Headers | None:
    if rng.random() < 0.15:
        return None
    items = [
        (rng.choice(NAMES).lower(), rng.choice(["v1", "v2", "", "a b", 'q"uote']))
        for _ in range(rng.randint(0, 8))
    ]
    return Headers(items)


def _info(rng: random.Random) -> StreamInfo:
    si = StreamInfo(
        downstream_remote_address=rng.choice([None, ("10.0.0.1", 5), ("::1", 80)]),
        downstream_local_address=rng.choice([None, ("127.0.0.1", 8080)]),
        start_time=rng.choice([0.0, 1460751420.310, 1000.9995, 59.999999]) + rng.random(),
        protocol=rng.choice(["HTTP/1.1", "", "HTTP/2"]),
    )
    si.request_headers = _headers(rng)
    si.response_headers = _headers(rng)
    si.response_code = rng.choice([0, 200, 503, None, "x"])
    si.response_code_details = rng.choice(["", "via_upstream"])
    si.response_flags = set(rng.sample(["UF", "URX", "NR"], rng.randint(0, 2)))
    si.bytes_received = rng.choice([0, 12, 3.5])
    si.bytes_sent = rng.choice([0, 345, None])
    si.upstream_host = rng.choice([None, "", "10.0.2.1:80", 7])
    si.upstream_cluster = rng.choice([None, "", "backend"])
    si.route_name = rng.choice([None, "", "r1"])
    si.upstream_request_attempts = rng.choice([0, 1, 2])
    si.filter_state.update({"k": 42, "s": "text", "o": object.__name__})
    si.end_monotonic = rng.choice([None, si.start_monotonic + rng.random()])
    return si


@pytest.mark.parametrize("seed", range(60))
def test_generated_function_prints_what_the_plain_rendering_prints(seed, monkeypatch):
    monkeypatch.setattr(time, "monotonic", lambda: 5000.0)  # one clock for both renderings
    rng = random.Random(seed)
    for _ in range(10):
        fmt = _format(rng)
        formatter = TextFormatter(fmt, omit_empty_values=rng.random() < 0.3)
        for _ in range(10):
            si = _info(rng)
            assert formatter.format(si) == formatter.format_plain(si), (fmt, formatter.format.source)


def test_a_repeated_header_keeps_its_first_value_whichever_names_repeat():
    fmt = TextFormatter("%REQ(X-A)% %REQ(X-B)% %REQ(X-C?X-A)%")
    for items, line in [
        ([("x-a", "1"), ("x-b", "2")], "1 2 1"),
        ([("x-a", "1"), ("x-a", "9"), ("x-b", "2")], "1 2 1"),
        ([("x-b", "2"), ("x-a", "1"), ("x-b", "8"), ("x-a", "9")], "1 2 1"),
        ([("x-c", ""), ("x-c", "3")], "- - "),
        ([], "- - -"),
    ]:
        si = StreamInfo(request_headers=Headers(items))
        assert fmt.format(si) == fmt.format_plain(si) == line
