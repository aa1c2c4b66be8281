"""Compiled matchers for route configuration: string, header and query-parameter matchers.

Everything here is built once at config time; ``match`` calls do no parsing or compiling.
Regexes use Python's ``re`` with full-match semantics, as Envoy's RE2 ``FullMatch``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import unquote

from proxy.config.errors import ConfigError
from proxy.core.headers import Headers

StrPredicate = Callable[[str], bool]


def compile_regex(regex_msg, path: str) -> re.Pattern:
    """An ``envoy.type.matcher.v3.RegexMatcher`` (google_re2 engine or none) as a Python pattern."""
    for field, _ in regex_msg.ListFields():
        if field.name not in ("regex", "google_re2"):
            raise ConfigError(
                f"{path}.{field.name}",
                f"field '{field.name}' of RegexMatcher is not supported by Isthmus yet",
            )
    if regex_msg.HasField("google_re2") and regex_msg.google_re2.HasField("max_program_size"):
        raise ConfigError(
            f"{path}.google_re2.max_program_size", "max_program_size is not supported by Isthmus"
        )
    try:
        return re.compile(regex_msg.regex)
    except re.error as e:
        raise ConfigError(f"{path}.regex", f"invalid regex '{regex_msg.regex}': {e}") from None


def compile_string_matcher(msg, path: str) -> StrPredicate:
    """An ``envoy.type.matcher.v3.StringMatcher`` as a predicate on a string."""
    kind = msg.WhichOneof("match_pattern")
    ignore_case = msg.ignore_case
    if kind is None:
        raise ConfigError(path, "StringMatcher needs one of exact, prefix, suffix, contains, safe_regex")
    if kind == "custom":
        raise ConfigError(f"{path}.custom", "custom string matchers are not supported by Isthmus")
    if kind == "safe_regex":
        if ignore_case:
            raise ConfigError(
                f"{path}.ignore_case", "ignore_case has no effect with safe_regex (Envoy rejects it)"
            )
        fullmatch = compile_regex(msg.safe_regex, f"{path}.safe_regex").fullmatch
        return lambda v: fullmatch(v) is not None
    pattern = getattr(msg, kind)
    if ignore_case:
        pattern = pattern.lower()
        if kind == "exact":
            return lambda v: v.lower() == pattern
        if kind == "prefix":
            return lambda v: v.lower().startswith(pattern)
        if kind == "suffix":
            return lambda v: v.lower().endswith(pattern)
        return lambda v: pattern in v.lower()
    if kind == "exact":
        return pattern.__eq__
    if kind == "prefix":
        return lambda v: v.startswith(pattern)
    if kind == "suffix":
        return lambda v: v.endswith(pattern)
    return lambda v: pattern in v


class HeaderMatcher:
    """``envoy.config.route.v3.HeaderMatcher`` with Envoy's semantics:

    * several values of one header are joined with ``,`` before matching;
    * a missing header matches only ``present_match`` (true when inverted, false when not inverted),
      unless ``treat_missing_header_as_empty`` is set;
    * ``invert_match`` inverts the result for a present header.
    """

    __slots__ = ("name", "predicate", "present", "invert", "missing_as_empty")

    def __init__(self, msg, path: str) -> None:
        if not msg.name:
            raise ConfigError(f"{path}.name", "a header matcher needs a header name")
        self.name = msg.name.lower()
        self.invert = msg.invert_match
        self.missing_as_empty = msg.treat_missing_header_as_empty
        self.present: bool | None = None
        kind = msg.WhichOneof("header_match_specifier")
        if kind is None:
            # No specifier: Envoy treats it as "header is present".
            self.present, self.predicate = True, None
        elif kind == "present_match":
            self.present, self.predicate = msg.present_match, None
        elif kind == "exact_match":
            self.predicate = msg.exact_match.__eq__
        elif kind == "prefix_match":
            p = msg.prefix_match
            self.predicate = lambda v: v.startswith(p)
        elif kind == "suffix_match":
            s = msg.suffix_match
            self.predicate = lambda v: v.endswith(s)
        elif kind == "contains_match":
            c = msg.contains_match
            self.predicate = lambda v: c in v
        elif kind == "safe_regex_match":
            fm = compile_regex(msg.safe_regex_match, f"{path}.safe_regex_match").fullmatch
            self.predicate = lambda v: fm(v) is not None
        elif kind == "string_match":
            self.predicate = compile_string_matcher(msg.string_match, f"{path}.string_match")
        elif kind == "range_match":
            lo, hi = msg.range_match.start, msg.range_match.end

            def in_range(v: str) -> bool:
                try:
                    n = int(v)
                except ValueError:
                    return False
                return lo <= n < hi

            self.predicate = in_range
        else:  # pragma: no cover - new proto fields
            raise ConfigError(f"{path}.{kind}", f"header match '{kind}' is not supported by Isthmus")

    def matches(self, headers: Headers) -> bool:
        values = headers.get_all(self.name)
        if not values:
            if not self.missing_as_empty:
                return self.present is not None and self.present == self.invert
            value = ""
        else:
            value = values[0] if len(values) == 1 else ",".join(values)
        if self.predicate is None:
            result = bool(self.present)
        else:
            result = self.predicate(value)
        return result != self.invert


class QueryParameterMatcher:
    """``envoy.config.route.v3.QueryParameterMatcher``: the parameter must be present; with
    ``string_match`` its first value must match too (as Envoy)."""

    __slots__ = ("name", "predicate")

    def __init__(self, msg, path: str) -> None:
        if not msg.name:
            raise ConfigError(f"{path}.name", "a query parameter matcher needs a name")
        self.name = msg.name
        self.predicate = (
            compile_string_matcher(msg.string_match, f"{path}.string_match")
            if msg.HasField("string_match")
            else None
        )

    def matches(self, params: dict[str, str]) -> bool:
        value = params.get(self.name)
        if value is None:
            return False
        return self.predicate is None or self.predicate(value)


def parse_query(path: str) -> dict[str, str]:
    """First value of each query parameter of a :path, percent-decoded (Envoy's parseAndDecodeQueryString)."""
    q = path.find("?")
    if q < 0:
        return {}
    query = path[q + 1 :]
    h = query.find("#")
    if h >= 0:
        query = query[:h]
    out: dict[str, str] = {}
    for part in query.split("&"):
        if not part:
            continue
        name, sep, value = part.partition("=")
        name = unquote(name)
        if name not in out:
            out[name] = unquote(value) if sep else ""
    return out


def strip_query(path: str) -> str:
    """The path portion of a :path (no query string, no fragment)."""
    q = path.find("?")
    if q >= 0:
        path = path[:q]
    h = path.find("#")
    return path if h < 0 else path[:h]
