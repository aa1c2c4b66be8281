import asyncio
import time

import pytest
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from google.protobuf import json_format

from proxy.config.errors import ConfigError
from proxy.filters.http.base import CONTINUE, STOP
from proxy.filters.http.fault import FaultConfig, FaultFilter, make_fault
from tests.unit.proxy.filters.http.fakes import FakeStream, context, request


def config(d: dict, rand=None) -> FaultConfig:
    ctx, _ = context()
    cfg = FaultConfig(json_format.ParseDict(d, fault_pb2.HTTPFault()), ctx, "f", rand=rand)
    return cfg


async def run(cfg: FaultConfig, headers=None):
    stream = FakeStream(headers or request(), route=None)
    f = FaultFilter(cfg)
    status = await f.on_request_headers(stream, True)
    return f, stream, status


def counter(cfg, name):
    c = cfg.ctx.stats.counters.get(f"http.ingress.fault.{name}")
    return c.value if c else 0


async def test_abort_with_100_percent():
    cfg = config({"abort": {"http_status": 503, "percentage": {"numerator": 100}}})
    f, stream, status = await run(cfg)
    assert status is STOP
    assert stream.local_reply[:4] == (503, b"fault filter abort", "FI", "fault_filter_abort")
    assert counter(cfg, "aborts_injected") == 1
    f.on_destroy()
    assert cfg.ctx.stats.gauges["http.ingress.fault.active_faults"].value == 0


async def test_abort_percentage_follows_random_value():
    hits = []
    for v in range(100):
        cfg = config(
            {"abort": {"http_status": 418, "percentage": {"numerator": 30}}}, rand=lambda bits, v=v: v
        )
        _, _, status = await run(cfg)
        hits.append(status is STOP)
    assert sum(hits) == 30


async def test_million_denominator():
    cfg = config(
        {"abort": {"http_status": 500, "percentage": {"numerator": 1, "denominator": "MILLION"}}},
        rand=lambda bits: 1,
    )
    _, _, status = await run(cfg)
    assert status is CONTINUE


async def test_fixed_delay_then_continue_with_di():
    cfg = config({"delay": {"fixed_delay": "0.05s", "percentage": {"numerator": 100}}})
    started = time.monotonic()
    f, stream, status = await run(cfg)
    assert status is CONTINUE and time.monotonic() - started >= 0.05
    assert stream.stream_info.flags_string() == "DI"
    assert counter(cfg, "delays_injected") == 1
    assert cfg.ctx.stats.gauges["http.ingress.fault.active_faults"].value == 1  # until the stream ends
    f.on_destroy()
    assert cfg.ctx.stats.gauges["http.ingress.fault.active_faults"].value == 0


async def test_delay_then_abort():
    cfg = config(
        {
            "delay": {"fixed_delay": "0.01s", "percentage": {"numerator": 100}},
            "abort": {"http_status": 503, "percentage": {"numerator": 100}},
        }
    )
    _, stream, status = await run(cfg)
    assert status is STOP and stream.stream_info.flags_string() == "DI,FI"


async def test_header_abort_and_percentage_header():
    cfg = config({"abort": {"header_abort": {}, "percentage": {"numerator": 100}}})
    _, stream, status = await run(cfg, request(x_envoy_fault_abort_request="429"))
    assert status is STOP and stream.local_reply[0] == 429
    _, _, status = await run(cfg, request())
    assert status is CONTINUE
    _, _, status = await run(cfg, request(x_envoy_fault_abort_request="99"))
    assert status is CONTINUE  # not a valid HTTP status
    _, _, status = await run(
        cfg, request(x_envoy_fault_abort_request="500", x_envoy_fault_abort_request_percentage="0")
    )
    assert status is CONTINUE


async def test_header_delay():
    cfg = config({"delay": {"header_delay": {}, "percentage": {"numerator": 100}}})
    started = time.monotonic()
    _, stream, status = await run(cfg, request(x_envoy_fault_delay_request="30"))
    assert status is CONTINUE and time.monotonic() - started >= 0.03
    assert stream.stream_info.flags_string() == "DI"


async def test_headers_matcher_limits_the_fault():
    cfg = config(
        {
            "abort": {"http_status": 503, "percentage": {"numerator": 100}},
            "headers": [{"name": "x-chaos", "exact_match": "1"}],
        }
    )
    assert (await run(cfg, request()))[2] is CONTINUE
    assert (await run(cfg, request(x_chaos="1")))[2] is STOP


async def test_max_active_faults_overflow():
    cfg = config({"delay": {"fixed_delay": "0.2s", "percentage": {"numerator": 100}}, "max_active_faults": 1})
    first = asyncio.ensure_future(run(cfg))
    await asyncio.sleep(0.02)
    started = time.monotonic()
    _, stream, status = await run(cfg)
    assert status is CONTINUE and time.monotonic() - started < 0.2
    assert stream.stream_info.flags_string() == "-"
    assert counter(cfg, "faults_overflow") == 1
    f, _, _ = await first
    f.on_destroy()


def test_unsupported_fields_are_rejected_with_path():
    ctx, _ = context()
    msg = json_format.ParseDict(
        {"abort": {"grpc_status": 14, "percentage": {"numerator": 1}}}, fault_pb2.HTTPFault()
    )
    with pytest.raises(ConfigError) as e:
        make_fault(msg, ctx, "hcm.http_filters[0].typed_config")
    assert e.value.path == "hcm.http_filters[0].typed_config.abort.grpc_status"
    msg = json_format.ParseDict(
        {"response_rate_limit": {"fixed_limit": {"limit_kbps": 1}}}, fault_pb2.HTTPFault()
    )
    with pytest.raises(ConfigError) as e:
        make_fault(msg, ctx, "p")
    assert e.value.path == "p.response_rate_limit"
