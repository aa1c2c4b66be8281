"""The generated access-log function prints exactly what the plain rendering (one getter call per
operator, ``TextFormatter.format_plain``) prints, for every operator, literal and missing value."""

from __future__ import annotations

import time

import pytest

from proxy.accesslog.formatter import DEFAULT_FORMAT, SUPPORTED_OPERATORS, TextFormatter
from proxy.core.headers import Headers
from proxy.core.stream_info import StreamInfo

T0 = 1460751420.310


def full_info() -> StreamInfo:
    si = StreamInfo(
        downstream_remote_address=("10.0.35.28", 51000),
        downstream_local_address=("::1", 8080),
        start_time=T0,
    )
    si.request_headers = Headers(
        [
            (":method", "POST"),
            (":path", "/api"),
            (":authority", "svc"),
            ("user-agent", "curl/8"),
            ("x-request-id", "abc"),
            ("x-dup", "first"),
            ("x-dup", "second"),
            ("x-empty", ""),
        ]
    )
    si.response_headers = Headers(
        [(":status", "503"), ("x-envoy-upstream-service-time", "7"), ("x-dup", "a")]
    )
    si.response_code = 503
    si.response_code_details = "upstream_reset"
    si.response_flags = {"UF", "URX"}
    si.bytes_received = 12
    si.bytes_sent = 345
    si.upstream_host = "10.0.2.1:80"
    si.upstream_cluster = "backend"
    si.route_name = "r1"
    si.upstream_request_attempts = 2
    si.filter_state["k"] = 42
    si.filter_state["requested_server_name"] = "sni.example"
    si.end_monotonic = si.start_monotonic + 0.0421
    return si


def empty_info() -> StreamInfo:
    si = StreamInfo(start_time=T0 + 0.9999, protocol="")
    si.end_monotonic = si.start_monotonic
    return si


def running_info() -> StreamInfo:
    """No end time yet: %DURATION% reads the clock."""
    si = StreamInfo(start_time=T0, request_headers=Headers([(":path", "/only")]))
    si.response_headers = Headers([])
    return si


ALL_OPERATORS = " ".join(
    f"%{op}%"
    for op in SUPPORTED_OPERATORS
    if op not in ("REQ", "REQUEST_HEADER", "RESP", "RESPONSE_HEADER", "START_TIME", "FILTER_STATE")
)

FORMATS = [
    DEFAULT_FORMAT,
    ALL_OPERATORS + "\n",
    "%REQ(X-DUP)% %RESP(X-DUP)% %REQUEST_HEADER(x-empty)%|%REQ(X-EMPTY?:PATH)%|%REQ(x-nope?:PATH)%",
    "%REQ(USER-AGENT):3% %REQ(X-NOPE):2% %RESPONSE_CODE_DETAILS:4% %UPSTREAM_HOST:5% %RESPONSE_CODE:1%",
    "%RESP(X-DUP)%",  # one response lookup
    "%REQ(:PATH)% only one request lookup",
    "%START_TIME% %START_TIME(%s.%3f)% %START_TIME(%Y {}%%)% %START_TIME:4%",
    "%FILTER_STATE(k)% %FILTER_STATE(nope)% %FILTER_STATE(k:PLAIN):1%",
    # Literals that must survive as text in generated source: quotes, backslashes, braces, %%, control
    # characters, non-ASCII, and something that looks like code.
    'a"b\'c\\d{e}f{{g}} %% \t\r\n\x00\x7f é 日本 \U0001f600 {_s0} " + str(1) + " %PROTOCOL%',
    "",
    "no operators at all\n",
    "%BYTES_SENT%%BYTES_RECEIVED%%DURATION%",
]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("omit", [False, True])
@pytest.mark.parametrize("make", [full_info, empty_info, running_info])
def test_generated_function_matches_the_plain_rendering(fmt, omit, make, monkeypatch):
    monkeypatch.setattr(time, "monotonic", lambda: 5000.0)  # the same clock for both renderings
    formatter = TextFormatter(fmt, omit_empty_values=omit)
    si = make()
    assert formatter.format(si) == formatter.format_plain(si)


def test_values_of_unexpected_types_are_converted_like_the_plain_rendering():
    si = full_info()
    si.response_code = None  # missing
    si.bytes_sent = 3.5
    si.upstream_host = 7  # not a str
    si.response_flags = set()
    fmt = TextFormatter("%RESPONSE_CODE% %BYTES_SENT% %UPSTREAM_HOST% %RESPONSE_FLAGS%")
    assert fmt.format(si) == fmt.format_plain(si) == "- 3.5 7 -"


def test_first_value_of_a_repeated_header_wins_in_both_maps():
    si = full_info()
    fmt = TextFormatter("%REQ(X-DUP)% %REQ(:METHOD)% %RESP(x-dup)% %RESP(:STATUS)%")
    assert fmt.format(si) == "first POST a 503"


def test_headers_changed_after_compilation_are_seen():
    fmt = TextFormatter("%REQ(X-A)% %REQ(X-B)%")
    si = full_info()
    assert fmt.format(si) == "- -"
    si.request_headers.add("x-b", "2")
    assert fmt.format(si) == "- 2"


def test_the_generated_source_holds_no_config_text_as_code():
    fmt = TextFormatter('" + __import__("os").getcwd() + "')
    assert fmt.format(StreamInfo()) == '" + __import__("os").getcwd() + "'
    assert "__import__" not in fmt.format.source.split("return", 1)[0]


def test_inlined_start_time_follows_the_second_both_ways():
    fmt = TextFormatter("[%START_TIME%] [%START_TIME(%H:%M:%E3S)%] [%START_TIME(%E6S)%]")
    assert "_MILLIS" in fmt.format.source  # the default shape is inlined
    for t in [1000.999, 1001.0, 1001.5, 1000.25, 1002.0005, 0.0, 59.9995, 59.999999, 1_700_000_000.123456]:
        si = StreamInfo(start_time=t)
        assert fmt.format(si) == fmt.format_plain(si), t
