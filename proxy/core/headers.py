"""An ordered, case-insensitive header map in Envoy's model.

Names are stored lower-case. Request pseudo-headers (``:method``, ``:path``, ``:authority``,
``:scheme``) and the response pseudo-header ``:status`` live in the same map, first, exactly as Envoy
keeps them; the HTTP/1.1 codec maps ``Host`` to ``:authority`` and back. Route matchers can
therefore match ``:path`` or ``:method`` like any other header.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator


class Headers:
    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = [(k.lower(), v) for k, v in items]

    @classmethod
    def from_lowercase(cls, items: list[tuple[str, str]]) -> Headers:
        """Adopt a list whose names are already lower-case (the codec's fast path; no copy)."""
        h = cls.__new__(cls)
        h._items = items
        return h

    # The lookups below are plain loops on purpose: on the request path they run a dozen times per
    # request over ~10 short names, where a generator or a side index costs more than it saves.
    def get(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        for kv in self._items:
            if kv[0] == name:
                return kv[1]
        return default

    def get_lowercase(self, name: str, default: str | None = None) -> str | None:
        """``get`` for a name the caller already lower-cased (a compiled lookup)."""
        for kv in self._items:
            if kv[0] == name:
                return kv[1]
        return default

    def get_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self._items if k == name]

    def __contains__(self, name: object) -> bool:
        if type(name) is not str:
            if not isinstance(name, str):
                return False
        name = name.lower()
        for kv in self._items:
            if kv[0] == name:
                return True
        return False

    def add(self, name: str, value: str) -> None:
        name = name.lower()
        if name.startswith(":"):
            # Pseudo-headers stay in front of regular headers.
            idx = 0
            while idx < len(self._items) and self._items[idx][0].startswith(":"):
                idx += 1
            self._items.insert(idx, (name, value))
        else:
            self._items.append((name, value))

    def set(self, name: str, value: str) -> None:
        """Replace every value of `name` with one value, keeping the first one's position."""
        name = name.lower()
        items = self._items
        for i, kv in enumerate(items):
            if kv[0] == name:
                items[i] = (name, value)
                for later in items[i + 1 :]:
                    if later[0] == name:  # rare: drop the other values
                        items[i + 1 :] = [x for x in items[i + 1 :] if x[0] != name]
                        break
                return
        self.add(name, value)

    def setdefault(self, name: str, value: str) -> str:
        current = self.get(name)
        if current is None:
            self.add(name, value)
            return value
        return current

    def remove(self, name: str) -> int:
        name = name.lower()
        for kv in self._items:
            if kv[0] == name:
                break
        else:
            return 0  # the common case: nothing to remove, nothing rebuilt
        before = len(self._items)
        self._items = [kv for kv in self._items if kv[0] != name]
        return before - len(self._items)

    def remove_names(self, names: frozenset[str] | set[str]) -> int:
        """Remove every header whose (lower-case) name is in `names`, in one pass; returns how many."""
        items = self._items
        for kv in items:
            if kv[0] in names:
                break
        else:
            return 0
        kept = [kv for kv in items if kv[0] not in names]
        self._items = kept
        return len(items) - len(kept)

    def items(self) -> list[tuple[str, str]]:
        return self._items

    def regular_items(self) -> Iterator[tuple[str, str]]:
        """Headers without the pseudo-headers, as they go on the wire."""
        return ((k, v) for k, v in self._items if not k.startswith(":"))

    def copy(self) -> Headers:
        return Headers.from_lowercase(list(self._items))

    def byte_size(self) -> int:
        return sum(len(k) + len(v) for k, v in self._items)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and other._items == self._items

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"

    # Convenience accessors for the pseudo-headers.
    @property
    def method(self) -> str | None:
        return self.get(":method")

    @property
    def path(self) -> str | None:
        return self.get(":path")

    @property
    def authority(self) -> str | None:
        return self.get(":authority")

    @property
    def status(self) -> int | None:
        value = self.get(":status")
        return int(value) if value is not None else None
