import json

import pytest

from proxy.accesslog.formatter import DEFAULT_FORMAT, JsonFormatter, TextFormatter
from proxy.config.errors import ConfigError
from proxy.core.headers import Headers
from proxy.core.stream_info import StreamInfo

T0 = 1460751420.310  # 2016-04-15T20:17:00.310Z, Envoy's documentation example


def make_info(**kw) -> StreamInfo:
    si = StreamInfo(
        downstream_remote_address=("10.0.35.28", 51000),
        downstream_local_address=("10.0.0.5", 8080),
        start_time=T0,
    )
    si.request_headers = Headers(
        [
            (":method", "POST"),
            (":path", "/api/v1/locations"),
            (":authority", "locations"),
            ("user-agent", "nsq2http"),
            ("x-request-id", "cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2"),
            ("x-forwarded-for", "10.0.35.28"),
        ]
    )
    si.response_headers = Headers([(":status", "204"), ("x-envoy-upstream-service-time", "100")])
    si.response_code = 204
    si.bytes_received = 154
    si.bytes_sent = 0
    si.end_monotonic = si.start_monotonic + 0.2265
    si.upstream_host = "10.0.2.1:80"
    for k, v in kw.items():
        setattr(si, k, v)
    return si


def test_default_format_matches_envoy_documentation_example():
    line = TextFormatter(DEFAULT_FORMAT).format(make_info())
    assert line == (
        '[2016-04-15T20:17:00.310Z] "POST /api/v1/locations HTTP/1.1" 204 - 154 0 226 100 '
        '"10.0.35.28" "nsq2http" "cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2" "locations" "10.0.2.1:80"\n'
    )


def test_default_format_prints_dash_for_everything_missing():
    si = StreamInfo(start_time=T0)
    si.end_monotonic = si.start_monotonic
    line = TextFormatter().format(si)
    assert line == '[2016-04-15T20:17:00.310Z] "- - HTTP/1.1" 0 - 0 0 0 - "-" "-" "-" "-" "-"\n'


def test_original_path_is_preferred_over_path():
    si = make_info()
    si.request_headers.add("x-envoy-original-path", "/original")
    assert TextFormatter("%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%").format(si) == "/original"
    assert TextFormatter("%REQ(X-MISSING?:PATH)%").format(si) == "/api/v1/locations"


def test_header_max_length_truncates():
    assert TextFormatter("%REQ(USER-AGENT):3%|%REQ(X-NOPE):3%").format(make_info()) == "nsq|-"


def test_response_header_and_case_insensitive_names():
    assert (
        TextFormatter("%RESP(X-Envoy-Upstream-Service-Time)% %RESPONSE_HEADER(x-nope)%").format(make_info())
        == "100 -"
    )


def test_start_time_custom_formats():
    si = make_info()
    assert (
        TextFormatter("%START_TIME(%Y/%m/%dT%H:%M:%S%z %s)%").format(si)
        == "2016/04/15T20:17:00+0000 1460751420"
    )
    assert TextFormatter("%START_TIME(%s.%3f)%").format(si) == "1460751420.310"
    assert TextFormatter("%START_TIME(%E6S)%").format(si) == "00.310000"


def test_flags_addresses_and_upstream_operators():
    si = make_info(
        response_flags={"UF", "URX"},
        upstream_cluster="backend",
        route_name="r1",
        response_code_details="upstream_reset_before_response_started{connection_failure}",
    )
    fmt = (
        "%RESPONSE_FLAGS% %DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% "
        "%DOWNSTREAM_LOCAL_ADDRESS% %UPSTREAM_CLUSTER% %ROUTE_NAME% %RESPONSE_CODE_DETAILS% %REQUESTED_SERVER_NAME%"
    )
    assert TextFormatter(fmt).format(si) == (
        "UF,URX 10.0.35.28:51000 10.0.35.28 10.0.0.5:8080 backend r1 "
        "upstream_reset_before_response_started{connection_failure} -"
    )


def test_ipv6_address_is_bracketed():
    si = make_info(downstream_remote_address=("::1", 4000))
    assert TextFormatter("%DOWNSTREAM_REMOTE_ADDRESS%").format(si) == "[::1]:4000"


def test_requested_server_name_from_filter_state():
    si = make_info()
    si.filter_state["requested_server_name"] = "api.example.com"
    assert TextFormatter("%REQUESTED_SERVER_NAME%").format(si) == "api.example.com"


def test_tcp_protocol_prints_dash():
    assert TextFormatter("%PROTOCOL%").format(make_info(protocol="")) == "-"


def test_escaped_percent_and_literals():
    assert TextFormatter("100%% %RESPONSE_CODE%\n").format(make_info()) == "100% 204\n"


@pytest.mark.parametrize("fmt", ["%NOT_AN_OPERATOR%", "%REQ%", "%RESPONSE_CODE(x)%", "50% off", "%REQ()%"])
def test_bad_formats_are_config_errors(fmt):
    with pytest.raises(ConfigError):
        TextFormatter(fmt, path="access_log[0].typed_config.log_format")


def test_omit_empty_values_prints_nothing_for_missing():
    assert (
        TextFormatter("[%UPSTREAM_HOST%]", omit_empty_values=True).format(make_info(upstream_host=None))
        == "[]"
    )


def test_json_format_is_typed_and_missing_is_null():
    fmt = JsonFormatter(
        {
            "code": "%RESPONSE_CODE%",
            "bytes": "%BYTES_RECEIVED%",
            "dur": "%DURATION%",
            "flags": "%RESPONSE_FLAGS%",
            "host": "%UPSTREAM_HOST%",
            "cluster": "%UPSTREAM_CLUSTER%",
            "req": "%REQ(:METHOD)% %REQ(:PATH)%",
            "const": "v1",
            "num": 7.0,
            "nested": {"ua": "%REQ(USER-AGENT)%"},
        }
    )
    line = fmt.format(make_info())
    assert line.endswith("\n") and "\n" not in line[:-1]
    assert json.loads(line) == {
        "code": 204,
        "bytes": 154,
        "dur": 226,
        "flags": "-",
        "host": "10.0.2.1:80",
        "cluster": None,
        "req": "POST /api/v1/locations",
        "const": "v1",
        "num": 7,
        "nested": {"ua": "nsq2http"},
    }


def test_json_untyped_and_omit_empty():
    si = make_info()
    assert json.loads(JsonFormatter({"code": "%RESPONSE_CODE%"}, typed=False).format(si)) == {"code": "204"}
    assert json.loads(
        JsonFormatter({"c": "%UPSTREAM_CLUSTER%", "x": "%RESPONSE_CODE%"}, omit_empty_values=True).format(si)
    ) == {"x": 204}


def test_json_format_rejects_unknown_operator_with_path():
    with pytest.raises(ConfigError) as e:
        JsonFormatter({"a": {"b": "%BOGUS%"}}, path="p.json_format")
    assert e.value.path == "p.json_format.a.b"
