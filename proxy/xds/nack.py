"""The ``error_detail`` of a NACK (pure): a google.rpc.Status naming each resource and its problem."""

from __future__ import annotations

from google.rpc import code_pb2, status_pb2

from proxy.config.errors import ConfigError
from proxy.xds.api import UpdateRejected
from proxy.xds.resources import SHORT_NAMES, ResourceDecodeError


def rejection_message(type_url: str, exc: BaseException) -> str:
    """One line per rejected resource: ``<name>: <problem>``, under a header naming the type.

    UpdateRejected lists every resource; ConfigError names the field path; anything else (a handler
    bug) is still reported rather than lost."""
    kind = SHORT_NAMES.get(type_url, type_url)
    if isinstance(exc, UpdateRejected):
        lines = [f"{name}: {msg}" for name, msg in sorted(exc.errors.items())]
    elif isinstance(exc, ResourceDecodeError):
        lines = [f"{exc.name}: {exc.message}"]
    elif isinstance(exc, ConfigError):
        lines = [str(exc)]
    else:
        lines = [f"{type(exc).__name__}: {exc}"]
    return f"{kind} update rejected:\n" + "\n".join(lines)


def error_detail(type_url: str, exc: BaseException) -> status_pb2.Status:
    return status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=rejection_message(type_url, exc))
