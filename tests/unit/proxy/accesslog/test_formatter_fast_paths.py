"""The access-log fast paths print exactly what the plain formatting would: %START_TIME% with the
per-second cache and the millisecond table, and header operators with names lower-cased once."""

from __future__ import annotations

import time

import pytest

from proxy.accesslog.formatter import DEFAULT_START_TIME_FORMAT, TextFormatter, _StartTimeFormatter
from proxy.core.headers import Headers
from proxy.core.stream_info import StreamInfo


def reference(fmt_digits: int, t: float, prefix: str = "%Y-%m-%dT%H:%M:%S.", suffix: str = "Z") -> str:
    micros = round(t * 1_000_000)
    sec, frac = divmod(micros, 1_000_000)
    tm = time.gmtime(sec)
    return time.strftime(prefix, tm) + f"{frac * 1000:09d}"[:fmt_digits] + time.strftime(suffix, tm)


@pytest.mark.parametrize(
    "t",
    [0.0, 0.0009, 0.001, 0.3099999, 0.31, 59.9995, 59.999999, 60.0, 1_700_000_000.123456, 1_700_000_001.0],
)
def test_default_start_time_matches_the_plain_rendering(t):
    fmt = _StartTimeFormatter(DEFAULT_START_TIME_FORMAT)
    assert fmt(t) == reference(3, t)


def test_cache_follows_the_second_both_ways_and_other_fractions_still_work():
    fmt = _StartTimeFormatter(DEFAULT_START_TIME_FORMAT)
    times = [1000.999, 1001.0, 1001.5, 1000.25, 1002.0005]
    assert [fmt(t) for t in times] == [reference(3, t) for t in times]
    six = _StartTimeFormatter("%H:%M:%E6S")
    assert six(1000.123456) == reference(6, 1000.123456, "%H:%M:%S.", "")
    nine = _StartTimeFormatter("%s.%f")
    assert nine(1000.5) == "1000.500000000"
    plain = _StartTimeFormatter("%Y %%f")  # no dynamic part; '%%f' is a literal '%f'
    assert plain(0.5) == "1970 %f"


def test_header_operators_find_mixed_case_config_names_and_fall_back():
    req = Headers([(":method", "GET"), (":path", "/a"), ("X-Forwarded-For", "10.0.0.1")])
    resp = Headers([(":status", "200"), ("x-envoy-upstream-service-time", "3")])
    si = StreamInfo(request_headers=req, response_headers=resp)
    fmt = TextFormatter(
        "%REQ(X-FORWARDED-FOR)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %RESP(X-Envoy-Upstream-Service-Time)% "
        "%RESP(missing?also-missing)% %REQ(:AUTHORITY)%"
    )
    assert fmt.format(si) == "10.0.0.1 /a 3 - -"
    assert fmt.format(StreamInfo()) == "- - - - -"  # no headers at all (a TCP stream)
    assert req.get_lowercase("x-forwarded-for") == "10.0.0.1"
    assert req.get_lowercase("X-Forwarded-For") is None  # the caller lower-cases
