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

    def get(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        for k, v in self._items:
            if k == name:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self._items if k == name]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        name = name.lower()
        return any(k == name for k, _ in self._items)

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
        for i, (k, _) in enumerate(self._items):
            if k == name:
                self._items[i] = (name, value)
                self._items[i + 1 :] = [kv for kv in self._items[i + 1 :] if kv[0] != name]
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
        before = len(self._items)
        self._items = [kv for kv in self._items if kv[0] != name]
        return before - len(self._items)

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
