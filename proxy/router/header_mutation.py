"""request/response_headers_to_add and _to_remove, compiled once per route configuration.

Values may use a few cheap Envoy substitutions; anything else with ``%`` is a ConfigError:
``%DOWNSTREAM_REMOTE_ADDRESS%``, ``%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%``,
``%DOWNSTREAM_LOCAL_ADDRESS%``, ``%DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%``, ``%DOWNSTREAM_LOCAL_PORT%``,
``%PROTOCOL%``, ``%UPSTREAM_CLUSTER%``, ``%UPSTREAM_HOST%``, ``%ROUTE_NAME%``, ``%HOSTNAME%``,
``%REQ(name)%`` and ``%%`` for a literal percent sign.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable

from proxy.config.errors import ConfigError
from proxy.config.supported import reject_unsupported
from proxy.core.headers import Headers
from proxy.core.stream_info import StreamInfo

APPEND_IF_EXISTS_OR_ADD = 0
ADD_IF_ABSENT = 1
OVERWRITE_IF_EXISTS_OR_ADD = 2
OVERWRITE_IF_EXISTS = 3

HEADER_VALUE_OPTION_SPEC = {
    "header": {"key": True, "value": True, "raw_value": True},
    "append": True,
    "append_action": True,
    "keep_empty_value": True,
}

_HOSTNAME = socket.gethostname()


def _addr(a: tuple[str, int] | None) -> str:
    if not a:
        return ""
    host, port = a[0], a[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _simple_command(name: str) -> Callable[[StreamInfo], str] | None:
    if name == "DOWNSTREAM_REMOTE_ADDRESS":
        return lambda si: _addr(si.downstream_remote_address)
    if name == "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT":
        return lambda si: si.downstream_remote_address[0] if si.downstream_remote_address else ""
    if name == "DOWNSTREAM_LOCAL_ADDRESS":
        return lambda si: _addr(si.downstream_local_address)
    if name == "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT":
        return lambda si: si.downstream_local_address[0] if si.downstream_local_address else ""
    if name == "DOWNSTREAM_LOCAL_PORT":
        return lambda si: str(si.downstream_local_address[1]) if si.downstream_local_address else ""
    if name == "PROTOCOL":
        return lambda si: si.protocol
    if name == "UPSTREAM_CLUSTER":
        return lambda si: si.upstream_cluster or ""
    if name == "UPSTREAM_HOST":
        return lambda si: si.upstream_host or ""
    if name == "ROUTE_NAME":
        return lambda si: si.route_name or ""
    if name == "HOSTNAME":
        return lambda si: _HOSTNAME
    return None


_TOKEN = re.compile(r"%%|%([A-Z_]+)(?:\(([^)]*)\))?%")


def compile_value(value: str, path: str) -> str | Callable[[StreamInfo], str]:
    """A header value: a plain string, or a function of the StreamInfo when it has substitutions."""
    if "%" not in value:
        return value
    parts: list[str | Callable[[StreamInfo], str]] = []
    pos = 0
    for m in _TOKEN.finditer(value):
        if m.start() > pos:
            parts.append(value[pos : m.start()])
        pos = m.end()
        if m.group(0) == "%%":
            parts.append("%")
            continue
        cmd, arg = m.group(1), m.group(2)
        if cmd == "REQ" and arg:
            hname = arg.split("?")[0].lower()
            parts.append(
                lambda si, h=hname: si.request_headers.get(h, "") if si.request_headers is not None else ""
            )
            continue
        fn = _simple_command(cmd) if arg is None else None
        if fn is None:
            raise ConfigError(path, f"header value substitution '{m.group(0)}' is not supported by Isthmus")
        parts.append(fn)
    if "%" in value[pos:]:
        raise ConfigError(
            path, f"unterminated or unsupported '%' in header value '{value}' (use %% for a literal %)"
        )
    if pos < len(value):
        parts.append(value[pos:])
    if all(isinstance(p, str) for p in parts):
        return "".join(parts)  # type: ignore[arg-type]
    frozen = tuple(parts)
    return lambda si: "".join(p if isinstance(p, str) else p(si) for p in frozen)


def _check_name(name: str, path: str) -> str:
    lname = name.lower()
    if not lname:
        raise ConfigError(path, "header name must not be empty")
    if lname.startswith(":") or lname == "host":
        raise ConfigError(
            path, f"header '{name}' cannot be modified (pseudo-headers and host are protected, as in Envoy)"
        )
    return lname


class HeaderMutation:
    """One level's removals and additions; removals go first, as in Envoy's HeaderParser."""

    __slots__ = ("remove", "add")

    def __init__(self, remove: tuple[str, ...], add: tuple[tuple[str, object, int, bool], ...]) -> None:
        self.remove = remove
        self.add = add

    def __bool__(self) -> bool:
        return bool(self.remove or self.add)

    def apply(self, headers: Headers, stream_info: StreamInfo | None) -> None:
        for name in self.remove:
            headers.remove(name)
        for name, value, action, keep_empty in self.add:
            if not isinstance(value, str):
                value = value(stream_info) if stream_info is not None else ""
            if not value and not keep_empty:
                continue
            if action == APPEND_IF_EXISTS_OR_ADD:
                headers.add(name, value)
            elif action == OVERWRITE_IF_EXISTS_OR_ADD:
                headers.set(name, value)
            elif action == ADD_IF_ABSENT:
                if name not in headers:
                    headers.add(name, value)
            elif name in headers:  # OVERWRITE_IF_EXISTS
                headers.set(name, value)


def compile_mutation(to_add, to_remove, path: str, add_field: str, remove_field: str) -> HeaderMutation:
    removes = []
    for i, name in enumerate(to_remove):
        removes.append(_check_name(name, f"{path}.{remove_field}[{i}]"))
    adds = []
    for i, opt in enumerate(to_add):
        here = f"{path}.{add_field}[{i}]"
        reject_unsupported(opt, HEADER_VALUE_OPTION_SPEC, here)
        name = _check_name(opt.header.key, f"{here}.header.key")
        if opt.header.value and opt.header.raw_value:
            raise ConfigError(f"{here}.header", "only one of value and raw_value may be set")
        raw = opt.header.value or opt.header.raw_value.decode("latin-1")
        value = compile_value(raw, f"{here}.header.value")
        if opt.HasField("append"):
            if opt.append_action != APPEND_IF_EXISTS_OR_ADD:
                raise ConfigError(f"{here}.append", "append and append_action cannot both be set")
            action = APPEND_IF_EXISTS_OR_ADD if opt.append.value else OVERWRITE_IF_EXISTS_OR_ADD
        else:
            action = opt.append_action
        adds.append((name, value, action, opt.keep_empty_value))
    return HeaderMutation(tuple(removes), tuple(adds))


def request_mutation(msg, path: str) -> HeaderMutation:
    return compile_mutation(
        msg.request_headers_to_add,
        msg.request_headers_to_remove,
        path,
        "request_headers_to_add",
        "request_headers_to_remove",
    )


def response_mutation(msg, path: str) -> HeaderMutation:
    return compile_mutation(
        msg.response_headers_to_add,
        msg.response_headers_to_remove,
        path,
        "response_headers_to_add",
        "response_headers_to_remove",
    )
