"""Access loggers: ``envoy.access_loggers.file`` and ``envoy.access_loggers.stdout``, access-log
filters, and ``build_access_loggers()`` for the HTTP connection manager and tcp_proxy.

``AccessLogger.log(stream_info)`` runs the filter, formats the line (a compiled format) and appends
it to an in-memory buffer. The buffer is written out off the request path: by a timer every
``FLUSH_INTERVAL_S`` (Envoy flushes its access-log files on an interval too), at once when it grows
past ``FLUSH_SIZE_BYTES``, and at exit (``flush_all()``; also registered with ``atexit``).
Loggers that name the same file share one buffer, as Envoy's do.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import sys
from collections.abc import Callable

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import substitution_format_string_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.access_loggers.stream.v3 import stream_pb2
from google.protobuf import json_format

from proxy.accesslog.formatter import DEFAULT_FORMAT, JsonFormatter, TextFormatter
from proxy.config.context import FactoryContext
from proxy.config.errors import ConfigError
from proxy.config.registry import ACCESS_LOGGERS
from proxy.config.supported import reject_unsupported
from proxy.core.stream_info import RESPONSE_FLAG_ORDER, StreamInfo

log = logging.getLogger("proxy.accesslog")

FLUSH_INTERVAL_S = 1.0
FLUSH_SIZE_BYTES = 64 * 1024


# --- sinks --------------------------------------------------------------------------------------------


class BufferedSink:
    """Collects lines; writes them out on a timer, past a size threshold, or on flush()."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._buf: list[str] = []
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None

    def write(self, line: str) -> None:
        self._buf.append(line)
        self._size += len(line)
        if self._size >= FLUSH_SIZE_BYTES or self._timer is None:
            self.appended()

    def appended(self) -> None:
        """After an append (AccessLogger.log appends inline): flush past the size threshold, or start
        the flush timer if none is running."""
        if self._size >= FLUSH_SIZE_BYTES:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no event loop (tools, tests): write through
                self.flush()
                return
            self._timer = loop.call_later(FLUSH_INTERVAL_S, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.flush()

    def flush(self) -> None:
        if not self._buf:
            return
        data = "".join(self._buf)
        self._buf.clear()
        self._size = 0
        try:
            self._write_out(data)
        except OSError as e:  # a full disk must not take the proxy down
            log.error("access log %s: write failed: %s", self.name, e)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.flush()

    def _write_out(self, data: str) -> None:
        raise NotImplementedError


class FileSink(BufferedSink):
    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path
        try:
            # Opened at config load so that a bad path is a config error, as in Envoy.
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as e:
            raise ConfigError("", f"cannot open access log file '{path}': {e.strerror}") from None

    def _write_out(self, data: str) -> None:
        view = memoryview(data.encode("utf-8", "replace"))
        while view:
            n = os.write(self._fd, view)
            view = view[n:]

    def reopen(self) -> None:
        """Reopen the file (after log rotation)."""
        self.flush()
        old = self._fd
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.close(old)


class StreamSink(BufferedSink):
    def __init__(self, name: str, stream_getter: Callable[[], object]) -> None:
        super().__init__(name)
        self._stream = stream_getter

    def _write_out(self, data: str) -> None:
        stream = self._stream()
        stream.write(data)
        stream.flush()


_SINKS: dict[str, BufferedSink] = {}


def file_sink(path: str) -> BufferedSink:
    sink = _SINKS.get(path)
    if sink is None:
        if path == "/dev/stdout":
            sink = StreamSink(path, lambda: sys.stdout)
        elif path == "/dev/stderr":
            sink = StreamSink(path, lambda: sys.stderr)
        else:
            sink = FileSink(path)
        _SINKS[path] = sink
    return sink


def flush_all() -> None:
    """Write every buffered access-log line out now (call on shutdown)."""
    for sink in list(_SINKS.values()):
        sink.flush()


def reopen_all() -> None:
    for sink in list(_SINKS.values()):
        if isinstance(sink, FileSink):
            try:
                sink.reopen()
            except OSError as e:
                log.error("access log %s: reopen failed: %s", sink.path, e)


atexit.register(flush_all)


# --- the logger ---------------------------------------------------------------------------------------

Filter = Callable[[StreamInfo], bool]


class AccessLogger:
    """One configured access log: ``log(stream_info)`` (cheap; never raises)."""

    __slots__ = ("name", "filter", "_formatter", "sink", "_format")

    def __init__(self, name: str, formatter, sink: BufferedSink, filter: Filter | None = None) -> None:
        self.name = name
        self.formatter = formatter
        self.sink = sink
        self.filter = filter

    @property
    def formatter(self):
        return self._formatter

    @formatter.setter
    def formatter(self, formatter) -> None:
        self._formatter = formatter
        self._format = formatter.format  # bound once: log() makes one call for the line

    def log(self, stream_info: StreamInfo) -> None:
        try:
            if self.filter is not None and not self.filter(stream_info):
                return
            line = self._format(stream_info)
            # BufferedSink.write, written out: between flushes a line is an append and a count.
            sink = self.sink
            sink._buf.append(line)
            sink._size += len(line)
            if sink._size >= FLUSH_SIZE_BYTES or sink._timer is None:
                sink.appended()
        except Exception:  # a logging bug must never fail a request
            log.exception("access log %s failed", self.name)


# --- formats ------------------------------------------------------------------------------------------

_SUBSTITUTION_SPEC = {
    "text_format": True,
    "text_format_source": {"inline_string": True, "filename": True},
    "json_format": True,
    "omit_empty_values": True,
    "json_format_options": {"sort_properties": True},
}


def formatter_from_substitution(fmt: substitution_format_string_pb2.SubstitutionFormatString, path: str):
    reject_unsupported(fmt, _SUBSTITUTION_SPEC, path)
    omit = fmt.omit_empty_values
    which = fmt.WhichOneof("format")
    if which == "json_format":
        return JsonFormatter(
            json_format.MessageToDict(fmt.json_format),
            omit_empty_values=omit,
            sort_properties=fmt.json_format_options.sort_properties,
            path=f"{path}.json_format",
        )
    if which == "text_format":
        return TextFormatter(fmt.text_format, omit_empty_values=omit, path=f"{path}.text_format")
    if which == "text_format_source":
        src = fmt.text_format_source
        if src.WhichOneof("specifier") == "inline_string":
            return TextFormatter(
                src.inline_string, omit_empty_values=omit, path=f"{path}.text_format_source.inline_string"
            )
        if src.WhichOneof("specifier") == "filename":
            try:
                with open(src.filename, encoding="utf-8") as f:
                    text = f.read()
            except OSError as e:
                raise ConfigError(
                    f"{path}.text_format_source.filename", f"cannot read '{src.filename}': {e.strerror}"
                ) from None
            return TextFormatter(text, omit_empty_values=omit, path=f"{path}.text_format_source.filename")
        raise ConfigError(f"{path}.text_format_source", "inline_string or filename is required")
    return TextFormatter(DEFAULT_FORMAT)


@ACCESS_LOGGERS.register("envoy.access_loggers.file", file_pb2.FileAccessLog)
def make_file_access_log(config: file_pb2.FileAccessLog, ctx: FactoryContext, path: str) -> AccessLogger:
    reject_unsupported(
        config,
        {"path": True, "log_format": True, "format": True, "json_format": True, "typed_json_format": True},
        path,
    )
    if not config.path:
        raise ConfigError(f"{path}.path", "an access log file path is required")
    which = config.WhichOneof("access_log_format")
    if which == "log_format":
        formatter = formatter_from_substitution(config.log_format, f"{path}.log_format")
    elif which == "format":  # deprecated v2 field, still accepted by Envoy
        formatter = TextFormatter(config.format or DEFAULT_FORMAT, path=f"{path}.format")
    elif which == "json_format":  # deprecated: every value is a string
        formatter = JsonFormatter(
            json_format.MessageToDict(config.json_format), typed=False, path=f"{path}.json_format"
        )
    elif which == "typed_json_format":  # deprecated
        formatter = JsonFormatter(
            json_format.MessageToDict(config.typed_json_format), path=f"{path}.typed_json_format"
        )
    else:
        formatter = TextFormatter(DEFAULT_FORMAT)
    try:
        sink = file_sink(config.path)
    except ConfigError as e:
        raise ConfigError(f"{path}.path", e.message) from None
    return AccessLogger("envoy.access_loggers.file", formatter, sink)


_STDOUT = StreamSink("stdout", lambda: sys.stdout)
_STDERR = StreamSink("stderr", lambda: sys.stderr)
_SINKS["<stdout>"] = _STDOUT
_SINKS["<stderr>"] = _STDERR


@ACCESS_LOGGERS.register("envoy.access_loggers.stdout", stream_pb2.StdoutAccessLog)
def make_stdout_access_log(
    config: stream_pb2.StdoutAccessLog, ctx: FactoryContext, path: str
) -> AccessLogger:
    reject_unsupported(config, {"log_format": True}, path)
    if config.HasField("log_format"):
        formatter = formatter_from_substitution(config.log_format, f"{path}.log_format")
    else:
        formatter = TextFormatter(DEFAULT_FORMAT)
    return AccessLogger("envoy.access_loggers.stdout", formatter, _STDOUT)


@ACCESS_LOGGERS.register("envoy.access_loggers.stderr", stream_pb2.StderrAccessLog)
def make_stderr_access_log(
    config: stream_pb2.StderrAccessLog, ctx: FactoryContext, path: str
) -> AccessLogger:
    reject_unsupported(config, {"log_format": True}, path)
    if config.HasField("log_format"):
        formatter = formatter_from_substitution(config.log_format, f"{path}.log_format")
    else:
        formatter = TextFormatter(DEFAULT_FORMAT)
    return AccessLogger("envoy.access_loggers.stderr", formatter, _STDERR)


# --- filters ------------------------------------------------------------------------------------------

_OPS = {
    accesslog_pb2.ComparisonFilter.EQ: lambda a, b: a == b,
    accesslog_pb2.ComparisonFilter.GE: lambda a, b: a >= b,
    accesslog_pb2.ComparisonFilter.LE: lambda a, b: a <= b,
    accesslog_pb2.ComparisonFilter.NE: lambda a, b: a != b,
}


def _comparison(
    cmp: accesslog_pb2.ComparisonFilter, value_of: Callable[[StreamInfo], int], path: str
) -> Filter:
    op = _OPS.get(cmp.op)
    if op is None:
        raise ConfigError(f"{path}.comparison.op", f"unknown comparison op {cmp.op}")
    # runtime_key: Isthmus has no runtime, so Envoy's fallback (default_value) always applies.
    ref = cmp.value.default_value
    return lambda si: op(value_of(si), ref)


def compile_filter(f: accesslog_pb2.AccessLogFilter, path: str) -> Filter:
    """An AccessLogFilter -> predicate on StreamInfo (raises ConfigError for unsupported filters)."""
    which = f.WhichOneof("filter_specifier")
    if which == "status_code_filter":
        return _comparison(
            f.status_code_filter.comparison, lambda si: si.response_code, f"{path}.status_code_filter"
        )
    if which == "duration_filter":
        return _comparison(
            f.duration_filter.comparison, lambda si: si.duration_ms(), f"{path}.duration_filter"
        )
    if which == "not_health_check_filter":
        # Health-check requests are the ones a health-check filter marked; Isthmus has none, but
        # honour the mark if a filter sets it.
        return lambda si: not si.filter_state.get("envoy.health_check")
    if which == "response_flag_filter":
        flags = list(f.response_flag_filter.flags)
        for i, flag in enumerate(flags):
            if flag not in RESPONSE_FLAG_ORDER:
                raise ConfigError(
                    f"{path}.response_flag_filter.flags[{i}]", f"unknown response flag '{flag}'"
                )
        if not flags:
            return lambda si: bool(si.response_flags)
        wanted = frozenset(flags)
        return lambda si: not wanted.isdisjoint(si.response_flags)
    if which in ("and_filter", "or_filter"):
        sub = getattr(f, which).filters
        if len(sub) < 2:
            raise ConfigError(f"{path}.{which}.filters", "needs at least 2 filters")
        compiled = [compile_filter(s, f"{path}.{which}.filters[{i}]") for i, s in enumerate(sub)]
        if which == "and_filter":
            return lambda si: all(c(si) for c in compiled)
        return lambda si: any(c(si) for c in compiled)
    if which is None:
        raise ConfigError(path, "an access log filter needs one filter_specifier")
    raise ConfigError(
        f"{path}.{which}",
        f"access log filter '{which}' is not supported by Isthmus "
        "(supported: status_code_filter, duration_filter, not_health_check_filter, "
        "response_flag_filter, and_filter, or_filter)",
    )


# --- entry point for HCM / tcp_proxy ------------------------------------------------------------------


def build_access_loggers(access_logs, ctx: FactoryContext, path: str) -> list[AccessLogger]:
    """Build the loggers of a repeated ``envoy.config.accesslog.v3.AccessLog`` field.

    ``path`` is the field's path, e.g. ``...typed_config.access_log``; errors name ``path[i]...``.
    """
    loggers = []
    for i, al in enumerate(access_logs):
        p = f"{path}[{i}]"
        reject_unsupported(al, {"name": True, "filter": True, "typed_config": True}, p)
        typed = al.typed_config if al.HasField("typed_config") else None
        ext, msg = ACCESS_LOGGERS.resolve(al.name, typed, p)
        logger = ext.factory(msg, ctx, f"{p}.typed_config")
        if al.HasField("filter"):
            logger.filter = compile_filter(al.filter, f"{p}.filter")
        loggers.append(logger)
    return loggers
