"""Envoy's access-log command operators (``%RESPONSE_CODE%``, ``%REQ(X?Y):Z%``, ...).

A format is compiled once (at config load) into a list of literal strings and small getter
closures; formatting a request is then one pass over that list. Missing values print as ``-`` in
text formats and as ``null`` in JSON formats, as Envoy does (``omit_empty_values`` turns them into
empty strings / omitted keys). In a JSON format a value that is exactly one operator keeps its type
(``%RESPONSE_CODE%`` is a number); a value mixing text and operators is a string.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Callable
from typing import Any

from proxy.config.errors import ConfigError
from proxy.core.stream_info import StreamInfo

DEFAULT_FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" '
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% "
    '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" '
    '"%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"\n'
)

# Envoy's default %START_TIME% format: 2016-04-15T20:17:00.310Z (UTC, milliseconds).
DEFAULT_START_TIME_FORMAT = "%Y-%m-%dT%H:%M:%E3SZ"

# A command: %NAME%, %NAME(arg)%, %NAME(arg):maxlen%. The argument may hold '%' (START_TIME's
# strftime format), so it is matched up to the first ')'.
_COMMAND_RE = re.compile(r"%([A-Z0-9_]+)(?:\(([^)]*)\))?(?::([0-9]+))?%")

Getter = Callable[[StreamInfo], Any]  # returns str, int, or None (missing)


# --- %START_TIME% -----------------------------------------------------------------------------------

_TIME_SPECIAL_RE = re.compile(r"%(?:E([1-9])S|([1-9])?f|s)")


class _StartTimeFormatter:
    """strftime in UTC plus Envoy's extensions: %E<n>S (seconds with n fraction digits),
    %f / %<n>f (fraction of the second, 9 or n digits) and %s (epoch seconds).
    The strftime parts are cached per whole second, so formatting is cheap."""

    __slots__ = ("parts", "_dynamic", "_cached_sec", "_cached", "_around")

    def __init__(self, fmt: str) -> None:
        # parts: ("strf", str) | ("frac", ndigits) | ("epoch", None)
        parts: list[tuple[str, Any]] = []
        pos = 0
        for m in _TIME_SPECIAL_RE.finditer(fmt):
            # A '%' escaped as '%%' right before us is not a directive.
            if _escaped(fmt, m.start()):
                continue
            if m.start() > pos:
                parts.append(("strf", fmt[pos : m.start()]))
            if m.group(1):  # %E<n>S
                parts.append(("strf", "%S"))
                parts.append(("strf", "."))
                parts.append(("frac", int(m.group(1))))
            elif m.group(0) == "%s":
                parts.append(("epoch", None))
            else:
                parts.append(("frac", int(m.group(2) or 9)))
            pos = m.end()
        if pos < len(fmt):
            parts.append(("strf", fmt[pos:]))
        # Merge adjacent strftime parts into one strftime call.
        merged: list[tuple[str, Any]] = []
        for kind, val in parts:
            if kind == "strf" and merged and merged[-1][0] == "strf":
                merged[-1] = ("strf", merged[-1][1] + val)
            else:
                merged.append((kind, val))
        self.parts = merged
        # The strftime parts only change once a second: they are rendered into `_cached` (a list with
        # a placeholder where a fraction or the epoch goes) and only `_dynamic` slots are filled per
        # call. With one slot (Envoy's default "...%E3SZ"), the text around it is kept joined.
        self._dynamic = tuple((i, kind, val) for i, (kind, val) in enumerate(merged) if kind != "strf")
        self._cached_sec = -1
        self._cached: list[str] = []
        self._around = ("", "")

    def __call__(self, t: float) -> str:
        # Work in whole microseconds: a float epoch is not exact (…0.310 is …0.30999994).
        micros = round(t * 1_000_000)
        sec = micros // 1_000_000
        if sec != self._cached_sec:
            tm = time.gmtime(sec)
            self._cached = [time.strftime(val, tm) if kind == "strf" else "" for kind, val in self.parts]
            self._cached_sec = sec
            if len(self._dynamic) == 1:
                i = self._dynamic[0][0]
                self._around = ("".join(self._cached[:i]), "".join(self._cached[i + 1 :]))
        dynamic = self._dynamic
        if not dynamic:
            return "".join(self._cached)
        if len(dynamic) == 1:
            _, kind, val = dynamic[0]
            before, after = self._around
            return before + (_fraction(micros - sec * 1_000_000, val) if kind == "frac" else str(sec)) + after
        out = self._cached.copy()
        for i, kind, val in dynamic:
            out[i] = _fraction(micros - sec * 1_000_000, val) if kind == "frac" else str(sec)
        return "".join(out)


_MILLIS = tuple(f"{i:03d}" for i in range(1000))


def _fraction(micros: int, digits: int) -> str:
    """The first `digits` digits of the second's fraction (nanoseconds, 9 digits, truncated)."""
    if digits == 3:
        return _MILLIS[micros // 1000]
    return f"{micros * 1000:09d}"[:digits]


def _escaped(fmt: str, idx: int) -> bool:
    n = 0
    while idx - 1 - n >= 0 and fmt[idx - 1 - n] == "%":
        n += 1
    return n % 2 == 1


# --- operators ----------------------------------------------------------------------------------------


def _addr(a: tuple[str, int] | None) -> str | None:
    if not a:
        return None
    host, port = a[0], a[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _addr_no_port(a: tuple[str, int] | None) -> str | None:
    return a[0] if a else None


def _header_getter(attr: str, arg: str | None, command: str) -> Getter:
    if not arg:
        raise ConfigError("", f"{command} requires a header name, e.g. %{command}(X-REQUEST-ID)%")
    main, _, alt = arg.partition("?")
    main = main.strip().lower()
    alt = alt.strip().lower() or None
    if not main:
        raise ConfigError("", f"{command}: empty header name in '{arg}'")

    # Names are lower-cased here, once: the lookups skip Headers.get's lower().
    if attr == "request_headers":
        if alt is None:

            def get(si: StreamInfo) -> str | None:
                h = si.request_headers
                return h.get_lowercase(main) if h is not None else None
        else:

            def get(si: StreamInfo) -> str | None:
                h = si.request_headers
                if h is None:
                    return None
                v = h.get_lowercase(main)
                return v if v is not None else h.get_lowercase(alt)
    elif alt is None:

        def get(si: StreamInfo) -> str | None:
            h = si.response_headers
            return h.get_lowercase(main) if h is not None else None
    else:

        def get(si: StreamInfo) -> str | None:
            h = si.response_headers
            if h is None:
                return None
            v = h.get_lowercase(main)
            return v if v is not None else h.get_lowercase(alt)

    return get


def _start_time_getter(arg: str | None) -> Getter:
    fmt = _StartTimeFormatter(arg if arg else DEFAULT_START_TIME_FORMAT)
    return lambda si: fmt(si.start_time)


def _filter_state_getter(arg: str | None) -> Getter:
    if not arg:
        raise ConfigError("", "FILTER_STATE requires a key")
    key = arg.split(":")[0]

    def get(si: StreamInfo):
        v = si.filter_state.get(key)
        if v is None or isinstance(v, (str, int, float, bool)):
            return v
        return str(v)

    return get


def _requested_server_name(si: StreamInfo) -> str | None:
    # StreamInfo has no SNI field yet; the listener/HCM may set it either way.
    v = getattr(si, "requested_server_name", None) or si.filter_state.get("requested_server_name")
    return v or None


_HOSTNAME = socket.gethostname()

# Operators without an argument: name -> getter.
_SIMPLE: dict[str, Getter] = {
    "PROTOCOL": lambda si: si.protocol or None,
    "RESPONSE_CODE": lambda si: si.response_code,
    "RESPONSE_CODE_DETAILS": lambda si: si.response_code_details or None,
    "RESPONSE_FLAGS": lambda si: si.flags_string(),
    "BYTES_RECEIVED": lambda si: si.bytes_received,
    "BYTES_SENT": lambda si: si.bytes_sent,
    "DURATION": lambda si: si.duration_ms(),
    "UPSTREAM_HOST": lambda si: si.upstream_host or None,
    "UPSTREAM_CLUSTER": lambda si: si.upstream_cluster or None,
    "UPSTREAM_REQUEST_ATTEMPT_COUNT": lambda si: si.upstream_request_attempts,
    "DOWNSTREAM_REMOTE_ADDRESS": lambda si: _addr(si.downstream_remote_address),
    "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT": lambda si: _addr_no_port(si.downstream_remote_address),
    "DOWNSTREAM_LOCAL_ADDRESS": lambda si: _addr(si.downstream_local_address),
    "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT": lambda si: _addr_no_port(si.downstream_local_address),
    "ROUTE_NAME": lambda si: si.route_name or None,
    "REQUESTED_SERVER_NAME": _requested_server_name,
    "HOSTNAME": lambda si: _HOSTNAME,
}

_WITH_ARG: dict[str, Callable[[str | None, str], Getter]] = {
    "REQ": lambda arg, cmd: _header_getter("request_headers", arg, cmd),
    "REQUEST_HEADER": lambda arg, cmd: _header_getter("request_headers", arg, cmd),
    "RESP": lambda arg, cmd: _header_getter("response_headers", arg, cmd),
    "RESPONSE_HEADER": lambda arg, cmd: _header_getter("response_headers", arg, cmd),
    "START_TIME": lambda arg, cmd: _start_time_getter(arg),
    "FILTER_STATE": lambda arg, cmd: _filter_state_getter(arg),
}

SUPPORTED_OPERATORS = tuple(sorted([*_SIMPLE, *_WITH_ARG]))


def _operator(name: str, arg: str | None, max_len: str | None, path: str) -> Getter:
    if name in _SIMPLE:
        if arg is not None:
            raise ConfigError(path, f"operator %{name}% takes no argument")
        getter = _SIMPLE[name]
    elif name in _WITH_ARG:
        try:
            getter = _WITH_ARG[name](arg, name)
        except ConfigError as e:
            raise ConfigError(path, e.message) from None
    else:
        raise ConfigError(
            path,
            f"unsupported access log command operator %{name}% (supported: {', '.join(SUPPORTED_OPERATORS)})",
        )
    if max_len is not None:
        n = int(max_len)
        inner = getter

        def getter(si: StreamInfo, _inner=inner, _n=n):
            v = _inner(si)
            return v[:_n] if isinstance(v, str) else v

    return getter


class _Op:
    """One command operator of a format: its getter, and what the code generator needs to inline it."""

    __slots__ = ("name", "arg", "max_len", "getter")

    def __init__(self, name: str, arg: str | None, max_len: int | None, getter: Getter) -> None:
        self.name, self.arg, self.max_len, self.getter = name, arg, max_len, getter


def _parse(fmt: str, path: str) -> list[str | _Op]:
    """Split a format string into literal strings and operators (raises ConfigError)."""
    parts: list[str | _Op] = []
    literal: list[str] = []
    i, n = 0, len(fmt)
    while i < n:
        j = fmt.find("%", i)
        if j < 0:
            literal.append(fmt[i:])
            break
        literal.append(fmt[i:j])
        if fmt.startswith("%%", j):  # an escaped percent sign
            literal.append("%")
            i = j + 2
            continue
        m = _COMMAND_RE.match(fmt, j)
        if m is None:
            raise ConfigError(
                path, f"invalid access log format '{fmt}': no valid command operator at position {j}"
            )
        if literal:
            text = "".join(literal)
            if text:
                parts.append(text)
            literal = []
        name, arg, max_len = m.group(1), m.group(2), m.group(3)
        getter = _operator(name, arg, max_len, path)
        parts.append(_Op(name, arg, int(max_len) if max_len is not None else None, getter))
        i = m.end()
    if literal and "".join(literal):
        parts.append("".join(literal))
    return parts


def parse_format(fmt: str, path: str = "") -> list[str | Getter]:
    """Split a format string into literal strings and operator getters (raises ConfigError)."""
    return [p if p.__class__ is str else p.getter for p in _parse(fmt, path)]


def _text(v: Any, missing: str) -> str:
    if v is None:
        return missing
    if isinstance(v, str):
        return v
    return str(v)


def render_parts(parts: list[str | Getter], missing: str, si: StreamInfo) -> str:
    """The plain rendering: one pass over literals and getters (the oracle of the compiled one)."""
    out = []
    for p in parts:
        if p.__class__ is str:
            out.append(p)
        else:
            v = p(si)
            if v is None:
                out.append(missing)
            elif v.__class__ is str:
                out.append(v)
            else:
                out.append(str(v))
    return "".join(out)


# --- the code generator ------------------------------------------------------------------------------
#
# A text format becomes one Python function, generated once per format: every operator is an inline
# expression on the StreamInfo (attribute reads; header lookups in one dict built per request when a
# format reads several headers of the same map), and the line is one f-string. Only our own text goes
# into the source: literals are escaped character by character, header names are emitted with repr(),
# anything else is passed in the function's namespace. Operators without an inline form call their
# getter, so each value is exactly what the getter (and the plain rendering) gives.

# Operator -> expression on `si` giving the getter's value (None = missing).
_INLINE: dict[str, str] = {
    "PROTOCOL": "si.protocol or None",
    "RESPONSE_CODE": "si.response_code",
    "RESPONSE_CODE_DETAILS": "si.response_code_details or None",
    "RESPONSE_FLAGS": "si.flags_string() if si.response_flags else '-'",
    "BYTES_RECEIVED": "si.bytes_received",
    "BYTES_SENT": "si.bytes_sent",
    "DURATION": (
        "int(((_e if (_e := si.end_monotonic) is not None else _time.monotonic())"
        " - si.start_monotonic) * 1000)"
    ),
    "UPSTREAM_HOST": "si.upstream_host or None",
    "UPSTREAM_CLUSTER": "si.upstream_cluster or None",
    "UPSTREAM_REQUEST_ATTEMPT_COUNT": "si.upstream_request_attempts",
    "ROUTE_NAME": "si.route_name or None",
}
_HEADER_OPS = {
    "REQ": "request_headers",
    "REQUEST_HEADER": "request_headers",
    "RESP": "response_headers",
    "RESPONSE_HEADER": "response_headers",
}


def _fstring_literal(text: str) -> str:
    """`text` as the literal part of a double-quoted f-string."""
    out = []
    for c in text:
        if c in "{}":
            out.append(c + c)
        elif c == "\\" or c == '"':
            out.append("\\" + c)
        elif c.isprintable():
            out.append(c)
        else:
            out.append(f"\\U{ord(c):08x}")
    return "".join(out)


def compile_text_format(parts: list[str | _Op], missing: str) -> Callable[[StreamInfo], str]:
    """One generated function rendering `parts` exactly as ``render_parts`` does."""
    ns: dict[str, Any] = {
        "_time": time,
        "_MILLIS": _MILLIS,
        "__builtins__": {"int": int, "str": str, "dict": dict, "round": round, "len": len},
    }
    body: list[str] = []
    # Header maps read more than once are turned into one dict per request (first value wins, as in
    # Headers.get); a single lookup goes through Headers.get_lowercase.
    wanted: dict[str, set[str]] = {}
    for p in parts:
        if p.__class__ is not str and p.name in _HEADER_OPS and p.arg:
            main, _, alt = p.arg.partition("?")
            names = wanted.setdefault(_HEADER_OPS[p.name], set())
            names.add(main.strip().lower())
            if alt.strip():
                names.add(alt.strip().lower())
    maps: dict[str, str] = {}
    for attr, names in wanted.items():
        var = "_rq" if attr == "request_headers" else "_rs"
        body.append(f"{var} = si.{attr}")
        if len(names) > 1:
            # First value wins: the items' dict as they are (last wins) unless a name repeats.
            body.append(f"if {var} is None: {var} = {{}}")
            body.append(f"elif len({var} := dict(_i := {var}.items())) != len(_i): {var} = dict(_i[::-1])")
            maps[attr] = f"{var}.get"
        else:
            maps[attr] = var
    pieces: list[str] = []
    for i, p in enumerate(parts):
        if p.__class__ is str:
            pieces.append(_fstring_literal(p))
            continue
        s = f"_s{i}"
        if p.name in _HEADER_OPS and p.arg:
            attr = _HEADER_OPS[p.name]
            main, _, alt = p.arg.partition("?")
            main, alt = main.strip().lower(), alt.strip().lower()
            var = maps[attr]
            if var.endswith(".get"):
                look = lambda n, var=var: f"{var}({n!r})"  # noqa: E731
            else:
                look = lambda n, var=var: f"(None if {var} is None else {var}.get_lowercase({n!r}))"  # noqa: E731
            cut = f"[:{p.max_len}]" if p.max_len is not None else ""
            if var.endswith(".get") and not alt and not cut:
                # A header value is a str or None: the dict's default is the missing text.
                body.append(f"{s} = {var}({main!r}, {missing!r})")
                pieces.append("{" + s + "}")
                continue
            body.append(f"_v = {look(main)}")
            if alt:
                body.append(f"if _v is None: _v = {look(alt)}")
            body.append(f"{s} = {missing!r} if _v is None else _v{cut}")
        elif p.name == "START_TIME" and p.max_len is None:
            # The per-second cached formatter (it always returns a str). With Envoy's default shape (one
            # millisecond slot between cached text) its fast path is inlined: the call only refreshes the
            # cache when the second changed.
            t = ns[f"_t{i}"] = _StartTimeFormatter(p.arg if p.arg else DEFAULT_START_TIME_FORMAT)
            if len(t._dynamic) == 1 and t._dynamic[0][1:] == ("frac", 3):
                body.append(f"_u{i} = round(si.start_time * 1000000)")
                body.append(f"_c{i} = _u{i} // 1000000")
                body.append(f"if _c{i} != _t{i}._cached_sec: _t{i}(si.start_time)")
                body.append(f"_b{i}, _a{i} = _t{i}._around")
                pieces.append(f"{{_b{i}}}{{_MILLIS[(_u{i} - _c{i} * 1000000) // 1000]}}{{_a{i}}}")
                continue
            body.append(f"{s} = _t{i}(si.start_time)")
        else:
            expr = _INLINE.get(p.name) if p.max_len is None else None
            if expr is None:
                ns[f"_g{i}"] = p.getter
                expr = f"_g{i}(si)"
            # Inside the f-string: the missing text or the value's str() (``!s``: a str as it is).
            # Our expressions hold no double quote or backslash (a getter is called by its name).
            pieces.append(f"{{({missing!r} if (_v := {expr}) is None else _v)!s}}")
            continue
        pieces.append("{" + s + "}")
    body.append('return f"' + "".join(pieces) + '"')
    src = "def format(si):\n" + "".join(f"    {line}\n" for line in body)
    exec(compile(src, "<access log format>", "exec"), ns)
    fn = ns["format"]
    fn.source = src
    return fn


class TextFormatter:
    """A compiled text format. ``format(stream_info) -> str`` is one generated function."""

    __slots__ = ("parts", "missing", "source", "format")

    def __init__(self, fmt: str = DEFAULT_FORMAT, *, omit_empty_values: bool = False, path: str = "") -> None:
        self.source = fmt
        ops = _parse(fmt, path)
        self.parts = [p if p.__class__ is str else p.getter for p in ops]
        self.missing = "" if omit_empty_values else "-"
        self.format = compile_text_format(ops, self.missing)

    def format_plain(self, si: StreamInfo) -> str:
        """The same line by the plain rendering (one getter call per operator)."""
        return render_parts(self.parts, self.missing, si)


_OMIT = object()


def _compile_json_value(value: Any, path: str, typed: bool, omit_empty: bool) -> Callable[[StreamInfo], Any]:
    if isinstance(value, dict):
        fields = [(k, _compile_json_value(v, f"{path}.{k}", typed, omit_empty)) for k, v in value.items()]

        def obj(si: StreamInfo):
            out = {}
            for k, f in fields:
                v = f(si)
                if v is not _OMIT:
                    out[k] = v
            return out

        return obj
    if isinstance(value, str):
        parts = parse_format(value, path)
        if len(parts) == 1 and not isinstance(parts[0], str):
            getter = parts[0]
            if typed:
                if omit_empty:
                    return lambda si: _OMIT if (v := getter(si)) is None or v == "" else v
                return getter
            # Untyped (deprecated FileAccessLog.json_format): every value is a string.
            return lambda si: _text(getter(si), "-")
        if not any(callable(p) for p in parts):
            const = "".join(parts)  # a constant string (with '%%' unescaped)
            return lambda si: const
        return TextFormatter(value, path=path).format
    if isinstance(value, bool) or isinstance(value, (int, float)) or value is None:
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # a Struct stores every number as a double
        return lambda si: value
    raise ConfigError(
        path,
        f"json_format values must be strings, numbers, booleans or nested objects, "
        f"not {type(value).__name__}",
    )


class JsonFormatter:
    """A compiled ``json_format`` (a Struct): one JSON object per line."""

    __slots__ = ("_root", "_sort")

    def __init__(
        self,
        struct: dict,
        *,
        typed: bool = True,
        omit_empty_values: bool = False,
        sort_properties: bool = False,
        path: str = "",
    ) -> None:
        if not isinstance(struct, dict):
            raise ConfigError(path, "json_format must be an object")
        self._root = _compile_json_value(struct, path, typed, omit_empty_values)
        self._sort = sort_properties

    def format(self, si: StreamInfo) -> str:
        return (
            json.dumps(
                self._root(si), separators=(",", ":"), sort_keys=self._sort, ensure_ascii=False, default=str
            )
            + "\n"
        )
