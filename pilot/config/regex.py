"""Regex checks as Envoy's RE2 would do them (Istio's StringMatch.regex goes to Envoy's safe_regex).

Python's ``re`` checks the syntax; on top of it we reject what RE2 refuses: lookarounds, backreferences,
atomic groups, possessive quantifiers and conditionals. Pure.
"""

from __future__ import annotations

import re

MAX_LENGTH = 1024  # Envoy's default regex program size guard is about this order; Istio caps at 1024 too


def re2_error(pattern: str) -> str | None:
    """None when RE2 would accept `pattern`, else why not."""
    if len(pattern) > MAX_LENGTH:
        return f"regex is longer than {MAX_LENGTH} characters"
    bad = _re2_unsupported(pattern)
    if bad:
        return f"invalid regex {pattern!r}: {bad} (RE2, which Envoy uses, does not support it)"
    try:
        re.compile(pattern.replace(r"\z", r"\Z"))
    except re.error as e:
        return f"invalid regex {pattern!r}: {e}"
    return None


def _re2_unsupported(p: str) -> str | None:
    i, n, in_class = 0, len(p), False
    while i < n:
        c = p[i]
        if c == "\\" and i + 1 < n:
            nxt = p[i + 1]
            if not in_class and nxt in "123456789":
                return "backreferences"
            if not in_class and nxt == "g":
                return "backreferences"
            if nxt == "Z":
                return r"\Z (use \z)"
            i += 2
            continue
        if in_class:
            if c == "]":
                in_class = False
            i += 1
            continue
        if c == "[":
            in_class = True
            i += 1
            if i < n and p[i] == "^":
                i += 1
            if i < n and p[i] == "]":  # a literal ] first in a class
                i += 1
            continue
        if c == "(" and p.startswith("(?", i):
            rest = p[i + 2 : i + 4]
            if rest.startswith(("=", "!")) or rest in ("<=", "<!"):
                return "lookahead/lookbehind assertions"
            if rest.startswith(">"):
                return "atomic groups"
            if rest.startswith("("):
                return "conditional groups"
            if rest.startswith("P="):
                return "backreferences"
        if c in "*+?}" and i + 1 < n and p[i + 1] == "+":
            return "possessive quantifiers"
        i += 1
    return None
