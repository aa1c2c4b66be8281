import asyncio
import json

import pytest
from envoy.config.accesslog.v3 import accesslog_pb2
from google.protobuf import json_format

from proxy.accesslog import loggers
from proxy.accesslog.loggers import build_access_loggers
from proxy.config.context import FactoryContext
from proxy.config.errors import ConfigError
from proxy.core.headers import Headers
from proxy.core.stream_info import StreamInfo
from proxy.stats.store import Store

FILE_TYPE = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"


def access_logs(*dicts):
    out = []
    for d in dicts:
        out.append(json_format.ParseDict(d, accesslog_pb2.AccessLog()))
    return out


def file_log(path, **extra):
    return {
        "name": "envoy.access_loggers.file",
        "typed_config": {"@type": FILE_TYPE, "path": str(path), **extra},
    }


def info(code=200, flags=()):
    si = StreamInfo(start_time=1460751420.0)
    si.request_headers = Headers([(":method", "GET"), (":path", "/x"), (":authority", "svc")])
    si.response_code = code
    si.response_flags = set(flags)
    si.finish()
    return si


@pytest.fixture
def ctx():
    return FactoryContext(stats=Store())


@pytest.fixture(autouse=True)
def _forget_sinks():
    yield
    for key in [k for k in loggers._SINKS if not k.startswith("<")]:
        loggers._SINKS.pop(key).close()


def test_file_logger_default_format_writes_one_line(tmp_path, ctx):
    path = tmp_path / "access.log"
    [logger] = build_access_loggers(access_logs(file_log(path)), ctx, "hcm.access_log")
    logger.log(info(404, {"NR"}))
    loggers.flush_all()
    line = path.read_text()
    assert line.startswith('[2016-04-15T20:17:00.000Z] "GET /x HTTP/1.1" 404 NR 0 0 ')
    assert line.endswith('"-" "-" "-" "svc" "-"\n')


def test_json_log_format(tmp_path, ctx):
    path = tmp_path / "access.json"
    cfg = file_log(path, log_format={"json_format": {"code": "%RESPONSE_CODE%", "flags": "%RESPONSE_FLAGS%"}})
    [logger] = build_access_loggers(access_logs(cfg), ctx, "p")
    logger.log(info(503, {"UH"}))
    loggers.flush_all()
    assert json.loads(path.read_text()) == {"code": 503, "flags": "UH"}


def test_text_format_source_inline_string(tmp_path, ctx):
    path = tmp_path / "a.log"
    cfg = file_log(
        path, log_format={"text_format_source": {"inline_string": "%RESPONSE_CODE% %REQ(:PATH)%\n"}}
    )
    [logger] = build_access_loggers(access_logs(cfg), ctx, "p")
    logger.log(info(200))
    logger.log(info(201))
    loggers.flush_all()
    assert path.read_text() == "200 /x\n201 /x\n"


async def test_lines_are_buffered_until_the_periodic_flush(tmp_path, ctx, monkeypatch):
    monkeypatch.setattr(loggers, "FLUSH_INTERVAL_S", 0.05)
    path = tmp_path / "a.log"
    [logger] = build_access_loggers(
        access_logs(
            file_log(path, log_format={"text_format_source": {"inline_string": "%RESPONSE_CODE%\n"}})
        ),
        ctx,
        "p",
    )
    logger.log(info(200))
    assert path.read_text() == ""  # not written on the request path
    for _ in range(100):
        if path.read_text():
            break
        await asyncio.sleep(0.02)
    assert path.read_text() == "200\n"


def test_status_code_and_response_flag_filters(tmp_path, ctx):
    path = tmp_path / "a.log"
    fmt = {"text_format_source": {"inline_string": "%RESPONSE_CODE% %RESPONSE_FLAGS%\n"}}
    cfg = {
        **file_log(path, log_format=fmt),
        "filter": {
            "or_filter": {
                "filters": [
                    {
                        "status_code_filter": {
                            "comparison": {"op": "GE", "value": {"default_value": 500, "runtime_key": "k"}}
                        }
                    },
                    {"response_flag_filter": {"flags": ["NR"]}},
                ]
            }
        },
    }
    [logger] = build_access_loggers(access_logs(cfg), ctx, "p")
    logger.log(info(200))
    logger.log(info(404, {"NR"}))
    logger.log(info(503, {"UF"}))
    logger.log(info(302))
    loggers.flush_all()
    assert path.read_text() == "404 NR\n503 UF\n"


def test_and_filter_and_empty_response_flag_filter(tmp_path, ctx):
    path = tmp_path / "a.log"
    fmt = {"text_format_source": {"inline_string": "%RESPONSE_CODE%\n"}}
    cfg = {
        **file_log(path, log_format=fmt),
        "filter": {
            "and_filter": {
                "filters": [
                    {"response_flag_filter": {}},
                    {
                        "status_code_filter": {
                            "comparison": {"op": "EQ", "value": {"default_value": 503, "runtime_key": "k"}}
                        }
                    },
                ]
            }
        },
    }
    [logger] = build_access_loggers(access_logs(cfg), ctx, "p")
    for si in (info(503), info(503, {"UH"}), info(404, {"NR"})):
        logger.log(si)
    loggers.flush_all()
    assert path.read_text() == "503\n"


@pytest.mark.parametrize(
    "bad, where",
    [
        ({"filter": {"runtime_filter": {"runtime_key": "x"}}}, "p[0].filter.runtime_filter"),
        (
            {"filter": {"response_flag_filter": {"flags": ["UH"]}}, "typed_config": {"@type": FILE_TYPE}},
            "p[0].typed_config.path",
        ),
    ],
)
def test_unsupported_filter_or_missing_path_is_config_error(tmp_path, ctx, bad, where):
    cfg = {**file_log(tmp_path / "a.log"), **bad}
    with pytest.raises(ConfigError) as e:
        build_access_loggers(access_logs(cfg), ctx, "p")
    assert e.value.path == where


def test_unknown_operator_error_names_the_field(tmp_path, ctx):
    cfg = file_log(tmp_path / "a.log", log_format={"text_format_source": {"inline_string": "%NOPE%"}})
    with pytest.raises(ConfigError) as e:
        build_access_loggers(access_logs(cfg), ctx, "p")
    assert e.value.path == "p[0].typed_config.log_format.text_format_source.inline_string"


def test_unsupported_substitution_field_rejected(tmp_path, ctx):
    cfg = file_log(tmp_path / "a.log", log_format={"text_format": "x", "content_type": "text/plain"})
    with pytest.raises(ConfigError) as e:
        build_access_loggers(access_logs(cfg), ctx, "p")
    assert e.value.path == "p[0].typed_config.log_format.content_type"


def test_stdout_logger(capsys, ctx):
    cfg = {
        "name": "envoy.access_loggers.stdout",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
            "log_format": {"json_format": {"c": "%RESPONSE_CODE%"}},
        },
    }
    [logger] = build_access_loggers(access_logs(cfg), ctx, "p")
    logger.log(info(418))
    loggers.flush_all()
    assert capsys.readouterr().out == '{"c":418}\n'


def test_unwritable_path_is_a_config_error(ctx):
    with pytest.raises(ConfigError) as e:
        build_access_loggers(access_logs(file_log("/nonexistent-dir/x/a.log")), ctx, "p")
    assert e.value.path == "p[0].typed_config.path"
