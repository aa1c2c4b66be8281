"""The check cache: results reused while the validity the server returned holds.

A result is stored under the values of the attributes the server said it looked at
(``referenced_attributes``), or under every non-volatile attribute when it did not say. A lookup tries
each set of referenced attribute names seen so far (few: one per kind of rule), as Mixer's client
cache did; ``lookup_stream`` reads just those attributes off the stream. Validity is a duration
and/or a use count; no validity means the result is not stored. Bounded: least recently used entries
go first. Pure (the clock is injected).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from proxy.filters.http.ext_authz.attributes import flatten, full_key, key_function

FULL = None  # the "every attribute" reference set


@dataclass(frozen=True)
class Validity:
    duration: float | None  # seconds; None: no time limit
    use_count: int | None  # None: no use limit
    referenced: tuple[str, ...] | None  # None: every non-volatile attribute

    @property
    def cacheable(self) -> bool:
        return bool(self.duration) or bool(self.use_count)


def _full_key(stream, context_extensions: dict[str, str]) -> tuple:
    return (FULL, full_key(flatten(stream, context_extensions)))


class _Entry:
    __slots__ = ("result", "expires", "uses_left")

    def __init__(self, result: Any, expires: float | None, uses_left: int | None) -> None:
        self.result = result
        self.expires = expires
        self.uses_left = uses_left


class CheckCache:
    def __init__(
        self, max_entries: int = 10000, max_ref_sets: int = 32, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_entries = max_entries
        self.max_ref_sets = max_ref_sets
        self.clock = clock
        # The reference sets seen, in order, and their key functions (stream, extensions) -> key.
        self._ref_sets: dict[tuple[str, ...] | None, Callable] = {}
        self._key_functions: tuple[Callable, ...] = ()
        self._entries: OrderedDict[tuple, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def _key(refs: tuple[str, ...] | None, attrs: dict[str, str]) -> tuple:
        if refs is FULL:
            return (FULL, full_key(attrs))
        return (refs, tuple(attrs.get(name) for name in refs))

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

    def lookup_stream(self, stream, context_extensions: dict[str, str]) -> Any | None:
        """``lookup(flatten(stream, context_extensions))`` reading only the referenced attributes: one
        generated key function per reference set (``attributes.key_function``) builds a small tuple,
        one dict lookup (no dict of every attribute, no protobuf). The clock is read only when an entry
        found has a time limit."""
        entries = self._entries
        for key_of in self._key_functions:
            key = key_of(stream, context_extensions)
            entry = entries.get(key)
            if entry is None:
                continue
            if entry.expires is not None and self.clock() >= entry.expires:
                del entries[key]
                continue
            uses = entry.uses_left
            if uses is not None:
                if uses <= 1:
                    del entries[key]
                    return entry.result
                entry.uses_left = uses - 1
            entries.move_to_end(key)
            return entry.result
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
            self._ref_sets[refs] = _full_key if refs is FULL else key_function(refs)
            self._key_functions = tuple(self._ref_sets.values())
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
