"""The check cache: results reused while the validity the server returned holds.

A result is stored under the values of the attributes the server said it looked at
(``referenced_attributes``), or under every non-volatile attribute when it did not say. A lookup tries
each set of referenced attribute names seen so far (few: one per kind of rule), as Mixer's client
cache did; ``lookup_stream`` reads just those attributes off the stream, in a function generated for
the reference sets seen (each set's key expressions and the hit logic inline: one Python frame per
lookup, no dict of every attribute, no protobuf). Validity is a duration
and/or a use count; no validity means the result is not stored. Bounded: least recently used entries
go first. Pure (the clock is injected).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from proxy.filters.http.ext_authz.attributes import EXPRESSION_NAMESPACE, expression, flatten, full_key

FULL = None  # the "every attribute" reference set


@dataclass(frozen=True)
class Validity:
    duration: float | None  # seconds; None: no time limit
    use_count: int | None  # None: no use limit
    referenced: tuple[str, ...] | None  # None: every non-volatile attribute

    @property
    def cacheable(self) -> bool:
        return bool(self.duration) or bool(self.use_count)


# One reference set's probe in the generated lookup: the same steps as ``CheckCache._hit``.
_PROBE = """\
    key = ({key})
    entry = _get(key)
    if entry is not None:
        if entry.expires is None or _clock() < entry.expires:
            uses = entry.uses_left
            if uses is None:
                _move(key)
            elif uses > 1:
                entry.uses_left = uses - 1
                _move(key)
            else:
                del _entries[key]
            return entry.result
        del _entries[key]
"""


class _Entry:
    __slots__ = ("result", "expires", "uses_left")

    def __init__(self, result: Any, expires: float | None, uses_left: int | None) -> None:
        self.result = result
        self.expires = expires
        self.uses_left = uses_left


class CheckCache:
    """``lookup_stream(stream, context_extensions)``, an instance attribute made by ``_compile``, is
    ``lookup(flatten(stream, context_extensions))`` reading only the referenced attributes."""

    def __init__(
        self, max_entries: int = 10000, max_ref_sets: int = 32, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_entries = max_entries
        self.max_ref_sets = max_ref_sets
        self.clock = clock
        # The reference sets seen, in order, each with its tag: a key is (tag, values...) or, for
        # FULL, (tag, full_key(attributes)); a small int hashes and compares cheaply.
        self._ref_sets: dict[tuple[str, ...] | None, int] = {}
        self._entries: OrderedDict[tuple, _Entry] = OrderedDict()
        self._compile()

    def __len__(self) -> int:
        return len(self._entries)

    def _key(self, refs: tuple[str, ...] | None, attrs: dict[str, str]) -> tuple:
        tag = self._ref_sets[refs]
        if refs is FULL:
            return (tag, full_key(attrs))
        return (tag, *[attrs.get(name) for name in refs])

    def _compile(self) -> None:
        """(Re)generate ``lookup_stream`` for the reference sets seen: it probes them in order."""
        source = ["def lookup_stream(st, ext):\n"]
        for refs, tag in self._ref_sets.items():
            if refs is FULL:
                key = f"{tag}, _full_key(_flatten(st, ext))"
            else:
                key = "".join([f"{tag}, "] + [expression(name) + ", " for name in refs])
            source.append(_PROBE.format(key=key))
        source.append("    return None\n")
        entries = self._entries
        namespace = dict(
            EXPRESSION_NAMESPACE,
            _get=entries.get,
            _move=entries.move_to_end,
            _entries=entries,
            _clock=self.clock,
            _full_key=full_key,
            _flatten=flatten,
        )
        exec("".join(source), namespace)  # noqa: S102
        self.lookup_stream = namespace["lookup_stream"]

    def lookup(self, attrs: dict[str, str]) -> Any | None:
        """The cached result for a request's flat attributes (``attributes.flatten``), or None."""
        if not self._ref_sets:
            return None
        now = self.clock()
        for refs in self._ref_sets:
            result = self._hit(self._key(refs, attrs), now)
            if result is not None:
                return result
        return None

    def _hit(self, key: tuple, now: float) -> Any | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires is not None and now >= entry.expires:
            del self._entries[key]
            return None
        if entry.uses_left is not None:
            entry.uses_left -= 1
            if entry.uses_left <= 0:
                del self._entries[key]
                return entry.result
        self._entries.move_to_end(key)
        return entry.result

    def store(self, attrs: dict[str, str], result: Any, validity: Validity) -> None:
        if not validity.cacheable:
            return
        refs = tuple(sorted(set(validity.referenced))) if validity.referenced is not None else FULL
        if refs not in self._ref_sets:
            if len(self._ref_sets) >= self.max_ref_sets:
                return  # a server naming ever-new attribute sets must not grow the lookup cost
            self._ref_sets[refs] = len(self._ref_sets)
            self._compile()
        expires = self.clock() + validity.duration if validity.duration else None
        # The use count includes the check that produced the result (Mixer's semantics).
        uses = validity.use_count - 1 if validity.use_count else None
        if uses is not None and uses <= 0:
            return
        key = self._key(refs, attrs)
        self._entries[key] = _Entry(result, expires, uses)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
