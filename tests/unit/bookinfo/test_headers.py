from starlette.datastructures import Headers

from bookinfo.common.headers import FORWARDED_HEADERS, TRACING_HEADERS, forward_headers


def test_forwards_every_tracing_header_and_end_user_only():
    incoming = Headers(
        {name: f"value-{name}" for name in FORWARDED_HEADERS} | {"cookie": "a=b", "x-other": "1"}
    )
    out = forward_headers(incoming)
    assert out == {name: f"value-{name}" for name in FORWARDED_HEADERS}


def test_header_names_are_matched_case_insensitively():
    out = forward_headers(Headers({"X-Request-Id": "abc", "X-B3-TraceId": "t"}))
    assert out == {"x-request-id": "abc", "x-b3-traceid": "t"}


def test_signed_in_user_wins_over_incoming_end_user():
    out = forward_headers(Headers({"end-user": "mallory", "b3": "x"}), user="jason")
    assert out == {"end-user": "jason", "b3": "x"}


def test_istio_tracing_headers_are_all_listed():
    assert set(TRACING_HEADERS) >= {
        "x-request-id",
        "traceparent",
        "tracestate",
        "b3",
        "x-b3-traceid",
        "x-b3-spanid",
        "x-b3-parentspanid",
        "x-b3-sampled",
        "x-b3-flags",
        "x-ot-span-context",
    }
