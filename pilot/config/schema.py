"""A small schema language for Istio's YAML, checked field by field with the field's path.

Why not pydantic: we keep the user's camelCase dict as the validated spec (builders read it as Istio's
docs show it), we need three outcomes per field (known and implemented, known but *not supported by
Isthmus yet*, unknown) and every finding must carry its exact path, e.g.
``spec.http[0].route[1].destination.subset``. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pilot.config import problems as P

# A finding before it knows its file and resource: (code, path, message).
Issue = tuple[str, str, str]

NOT_SUPPORTED = "is not supported by Isthmus yet"


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        return f"{path}[{key!r}]"
    return f"{path}.{key}" if path else key


def _type_name(v: Any) -> str:
    if v is None:
        return "null"
    return {
        dict: "object",
        list: "list",
        str: "string",
        bool: "boolean",
        int: "integer",
        float: "number",
    }.get(type(v), type(v).__name__)


class Schema:
    expected = "value"

    def check(self, value: Any, path: str, out: list[Issue]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class AnyValue(Schema):
    """Free-form (e.g. an EnvoyFilter patch value): any YAML value."""

    def check(self, value, path, out):
        return


class Str(Schema):
    expected = "string"

    def __init__(
        self,
        enum: tuple[str, ...] | None = None,
        pattern: str | None = None,
        check: Callable[[str], str | None] | None = None,
        what: str = "",
        code: str = P.SCHEMA,
    ) -> None:
        self.enum, self.pattern, self.fn, self.what, self.code = enum, pattern, check, what, code

    def check(self, value, path, out):
        if not isinstance(value, str):
            out.append((P.SCHEMA, path, f"expected a string, got {_type_name(value)}"))
            return
        if self.enum is not None and value not in self.enum:
            out.append((P.SCHEMA, path, f"{value!r} is not one of {', '.join(self.enum)}"))
        elif self.pattern is not None and not re.fullmatch(self.pattern, value):
            out.append((P.SCHEMA, path, f"{value!r} is not a valid {self.what or 'value'}"))
        elif self.fn is not None:
            msg = self.fn(value)
            if msg:
                out.append((self.code, path, msg))


class Int(Schema):
    expected = "integer"

    def __init__(self, min: int | None = None, max: int | None = None) -> None:  # noqa: A002
        self.min, self.max = min, max

    def check(self, value, path, out):
        if isinstance(value, bool) or not isinstance(value, int):
            out.append((P.SCHEMA, path, f"expected an integer, got {_type_name(value)}"))
            return
        if self.min is not None and value < self.min:
            out.append((P.SCHEMA, path, f"{value} is below the minimum {self.min}"))
        if self.max is not None and value > self.max:
            out.append((P.SCHEMA, path, f"{value} is above the maximum {self.max}"))


class Num(Int):
    expected = "number"

    def check(self, value, path, out):
        if isinstance(value, bool) or not isinstance(value, int | float):
            out.append((P.SCHEMA, path, f"expected a number, got {_type_name(value)}"))
            return
        if self.min is not None and value < self.min:
            out.append((P.SCHEMA, path, f"{value} is below the minimum {self.min}"))
        if self.max is not None and value > self.max:
            out.append((P.SCHEMA, path, f"{value} is above the maximum {self.max}"))


class Bool(Schema):
    def check(self, value, path, out):
        if not isinstance(value, bool):
            out.append((P.SCHEMA, path, f"expected true or false, got {_type_name(value)}"))


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds from a Go/Istio duration ("7s", "0.5s", "100ms", "1h30m"). ValueError when invalid."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"{text!r} is not a duration like 1s, 100ms or 1h30m")
    pos, total = 0, 0.0
    while pos < len(text):
        m = _DURATION_PART.match(text, pos)
        if not m:
            raise ValueError(f"{text!r} is not a duration like 1s, 100ms or 1h30m")
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    return total


class Duration(Schema):
    expected = "duration"

    def __init__(self, min_seconds: float = 0.0) -> None:
        self.min_seconds = min_seconds

    def check(self, value, path, out):
        try:
            secs = parse_duration(value)
        except ValueError as e:
            out.append((P.SCHEMA, path, str(e)))
            return
        if secs < self.min_seconds:
            out.append(
                (
                    P.SCHEMA,
                    path,
                    f"duration {value} is shorter than the minimum {self.min_seconds * 1000:g}ms",
                )
            )


class ListOf(Schema):
    expected = "list"

    def __init__(self, item: Schema, min_items: int = 0) -> None:
        self.item, self.min_items = item, min_items

    def check(self, value, path, out):
        if not isinstance(value, list):
            out.append((P.SCHEMA, path, f"expected a list, got {_type_name(value)}"))
            return
        if len(value) < self.min_items:
            out.append((P.SCHEMA, path, f"needs at least {self.min_items} item(s)"))
        for i, v in enumerate(value):
            self.item.check(v, join(path, i), out)


class MapOf(Schema):
    expected = "object"

    def __init__(self, value: Schema, key: Str | None = None) -> None:
        self.value, self.key = value, key

    def check(self, value, path, out):
        if not isinstance(value, dict):
            out.append((P.SCHEMA, path, f"expected an object, got {_type_name(value)}"))
            return
        for k, v in value.items():
            if self.key is not None:
                self.key.check(str(k), join(path, str(k)), out)
            self.value.check(v, join(path, str(k)), out)


@dataclass
class F:
    """One field of an object."""

    schema: Schema
    required: bool = False
    # Istio defines it but Isthmus does not implement it: an error, with this note if given.
    unsupported: bool | str = False
    # Supported only for some values (e.g. exportTo: ["*"]); returns None when the value is fine.
    supported_if: Callable[[Any], str | None] | None = None


@dataclass
class Obj(Schema):
    fields: dict[str, F]
    one_of: tuple[tuple[str, ...], ...] = ()  # at most one of each group may be set
    need_one_of: tuple[tuple[str, ...], ...] = ()  # exactly one of each group must be set
    extra: Callable[[dict, str, list[Issue]], None] | None = field(default=None, repr=False)
    expected = "object"

    def check(self, value, path, out):
        if not isinstance(value, dict):
            out.append((P.SCHEMA, path, f"expected an object, got {_type_name(value)}"))
            return
        for key, v in value.items():
            fpath = join(path, str(key))
            spec = self.fields.get(key)
            if spec is None:
                hint = _closest(str(key), self.fields)
                out.append(
                    (P.SCHEMA, fpath, "unknown field" + (f" (did you mean {hint!r}?)" if hint else ""))
                )
                continue
            if spec.unsupported:
                note = spec.unsupported if isinstance(spec.unsupported, str) else ""
                out.append((P.UNSUPPORTED, fpath, f"{key} {NOT_SUPPORTED}" + (f" ({note})" if note else "")))
                continue
            if v is None:
                continue  # YAML "field:" with no value is unset, as in Istio
            spec.schema.check(v, fpath, out)
            if spec.supported_if is not None:
                msg = spec.supported_if(v)
                if msg:
                    out.append((P.UNSUPPORTED, fpath, msg))
        for name, spec in self.fields.items():
            if spec.required and value.get(name) in (None, "", [], {}):
                out.append((P.SCHEMA, join(path, name), "required field is missing"))
        for group in self.one_of:
            present = [g for g in group if value.get(g) is not None]
            if len(present) > 1:
                out.append(
                    (P.SCHEMA, path, f"only one of {', '.join(group)} may be set, got {', '.join(present)}")
                )
        for group in self.need_one_of:
            present = [g for g in group if value.get(g) is not None]
            if len(present) != 1:
                out.append((P.SCHEMA, path, f"exactly one of {', '.join(group)} must be set"))
        if self.extra is not None:
            self.extra(value, path, out)


def _closest(key: str, names) -> str | None:
    import difflib

    m = difflib.get_close_matches(key, list(names), n=1, cutoff=0.75)
    return m[0] if m else None
