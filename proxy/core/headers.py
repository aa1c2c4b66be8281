"""An ordered, case-insensitive header map in Envoy's model.

Names are stored lower-case. Request pseudo-headers (``:method``, ``:path``, ``:authority``,
``:scheme``) and the response pseudo-header ``:status`` live in the same map, first, exactly as Envoy
keeps them; the HTTP/1.1 codec maps ``Host`` to ``:authority`` and back. Route matchers can
therefore match ``:path`` or ``:method`` like any other header.

Pass-through without re-serialising: a map the HTTP/1 codec built from one whole head may carry that
head's raw header lines (``raw_block``). While nothing but appends touched the headers, the encoder
sends those bytes as they came and serialises only what was appended after them (the ``x-request-id``,
``x-forwarded-proto`` ... the connection manager and the router add). Every other mutation (``set`` of
a header that came with the head, ``remove``, a pseudo-header ``add``) drops the raw block; removing
headers (hop-by-hop cleanup) cuts their lines out of it instead. ``items()`` is read-only for callers.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

_NEEDLES: dict[str, bytes] = {}  # header name -> b"\nname:" (a small, bounded set: the callers' names)


def _drop_raw_lines(
    raw: bytes, names: frozenset[str] | set[str] | tuple[str, ...], expect: int
) -> bytes | None:
    """`raw` without the lines of the headers called `names` (any case); None when it does not hold
    exactly `expect` such lines (then the caller forgets the raw block).

    Fast path: senders in the mesh write names lower-case, so each name is first looked for as given
    (one find per name, no lower-cased copy of the block); only when that does not account for all
    `expect` lines is the block searched case-insensitively."""
    if expect == 1 or expect == 2:
        cut = _exact_lines(raw, names, expect)
        if cut is not None:
            return cut
    low = raw.lower()
    cut: list[tuple[int, int]] = []
    for name in names:
        needle = _NEEDLES.get(name)
        if needle is None:
            needle = _NEEDLES[name] = b"\n" + name.encode("latin-1") + b":"
        if needle not in low and not low.startswith(needle[1:]):
            continue
        if low.startswith(needle[1:]):
            cut.append((0, low.index(b"\n") + 1))
        at = low.find(needle)
        while at >= 0:
            cut.append((at + 1, low.index(b"\n", at + 1) + 1))
            at = low.find(needle, at + 1)
    if len(cut) != expect:
        return None
    cut.sort()
    out = []
    pos = 0
    for start, end in cut:
        out.append(raw[pos:start])
        pos = end
    out.append(raw[pos:])
    return b"".join(out)


def _exact_lines(raw: bytes, names, expect: int) -> bytes | None:
    """`raw` without one line of each of `names` found as given (lower-case) at a line start; None
    unless exactly `expect` lines were found that way (a mixed-case or repeated name: the slow path).
    Found lines are all of them: the caller counted `expect` such headers, in any case."""
    found = []
    for name in names:
        needle = _NEEDLES.get(name)
        if needle is None:
            needle = _NEEDLES[name] = b"\n" + name.encode("latin-1") + b":"
        at = raw.find(needle)
        if at >= 0:
            found.append(at + 1)
        elif raw.startswith(needle[1:]):
            found.append(0)
    if len(found) != expect:
        return None
    if expect == 1:
        start = found[0]
        return raw[:start] + raw[raw.index(b"\n", start) + 1 :]
    a, b = found
    if a > b:
        a, b = b, a
    a_end = raw.index(b"\n", a) + 1
    b_end = raw.index(b"\n", b) + 1
    if a_end == b:  # adjacent lines (the usual case): one cut
        return raw[:a] + raw[b_end:]
    return raw[:a] + raw[a_end:b] + raw[b_end:]


_new = object.__new__

_PSEUDO_OR_HOST = frozenset((":method", ":path", ":authority", ":scheme", ":status", "host"))


class Headers:
    __slots__ = ("_items", "_raw", "_raw_n")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = [(k.lower(), v) for k, v in items]
        self._raw: bytes | None = None
        self._raw_n = 0

    @classmethod
    def from_lowercase(cls, items: list[tuple[str, str]], raw: bytes | None = None) -> Headers:
        """Adopt a list whose names are already lower-case (the codec's fast path; no copy). `raw`:
        the head's header lines as received, each ending in CRLF, one per regular item (plus the
        ``Host`` line that became ``:authority``) — the codec vouches for that."""
        h = _new(cls)
        h._items = items
        h._raw = raw
        h._raw_n = len(items)
        return h

    @property
    def raw_block(self) -> tuple[bytes, list[tuple[str, str]]] | None:
        """(the received header lines, the items appended since) while the headers may be sent as
        received plus appended lines; None once anything else changed them (re-serialise then)."""
        raw = self._raw
        if raw is None:
            return None
        return raw, self._items[self._raw_n :]

    def replace_items(self, items: list[tuple[str, str]]) -> None:
        """Adopt a rebuilt list (drops the raw block)."""
        self._items = items
        self._raw = None

    # The lookups below are plain loops on purpose: on the request path they run a dozen times per
    # request over ~10 short names, where a generator or a side index costs more than it saves.
    # Names are stored lower-case, so a name found as given needs no lower(); callers nearly always
    # pass lower-case literals. A miss lower-cases the name and looks again only when that changed it.
    def get(self, name: str, default: str | None = None) -> str | None:
        for kv in self._items:
            if kv[0] == name:
                return kv[1]
        low = name.lower()
        if low != name:
            for kv in self._items:
                if kv[0] == low:
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
        for kv in self._items:
            if kv[0] == name:
                return True
        low = name.lower()
        if low != name:
            for kv in self._items:
                if kv[0] == low:
                    return True
        return False

    def add(self, name: str, value: str) -> None:
        name = name.lower()
        if name[:1] == ":":
            # Pseudo-headers stay in front of regular headers.
            self._raw = None
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
                if i < self._raw_n:
                    self._raw = None  # a received header changed: re-serialise
                for later in items[i + 1 :]:
                    if later[0] == name:  # rare: drop the other values
                        items[i + 1 :] = [x for x in items[i + 1 :] if x[0] != name]
                        self._raw = None
                        break
                return
        if name[:1] == ":":
            self.add(name, value)
        else:
            items.append((name, value))

    def set_many(self, pairs: tuple[tuple[str, str], ...]) -> None:
        """``set`` each (lower-case, regular name, value) of `pairs`; when none of the names is there
        (the usual case: one pass over the items) they are all appended at once."""
        names = [kv[0] for kv in pairs]
        for kv in self._items:
            if kv[0] in names:
                for name, value in pairs:
                    self.set(name, value)
                return
        self._items.extend(pairs)

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
        self._raw = None
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
        removed = len(items) - len(kept)
        raw = self._raw
        if raw is not None:
            n = self._raw_n
            if not names.isdisjoint(_PSEUDO_OR_HOST) or any(kv[0] in names for kv in items[n:]):
                self._raw = None  # an appended header went too (or a pseudo): simpler to re-serialise
            else:
                self._raw = _drop_raw_lines(raw, names, removed)  # cut the received lines out
                self._raw_n = n - removed
        return removed

    def take(self, a: str, b: str) -> tuple[str | None, str | None]:
        """Remove every header named `a` or `b` (lower-case, regular names) and return the first value
        of each (None when absent): ``remove_names`` fused with the lookups, one pass over the items,
        nothing rebuilt when neither is there. Received lines are cut out of the raw block."""
        items = self._items
        va = vb = None
        at = []
        i = 0
        for kv in items:
            k = kv[0]
            if k == a:
                if va is None:
                    va = kv[1]
                at.append(i)
            elif k == b:
                if vb is None:
                    vb = kv[1]
                at.append(i)
            i += 1
        if not at:
            return None, None
        for i in reversed(at):
            del items[i]
        raw = self._raw
        if raw is not None:
            n = self._raw_n
            if at[-1] >= n or a in _PSEUDO_OR_HOST or b in _PSEUDO_OR_HOST or a[:1] == ":" or b[:1] == ":":
                self._raw = None
            else:
                self._raw = _drop_raw_lines(raw, (a, b), len(at))
                self._raw_n = n - len(at)
        return va, vb

    def items(self) -> list[tuple[str, str]]:
        return self._items

    def regular_items(self) -> Iterator[tuple[str, str]]:
        """Headers without the pseudo-headers, as they go on the wire."""
        return ((k, v) for k, v in self._items if not k.startswith(":"))

    def copy(self) -> Headers:
        h = Headers.from_lowercase(list(self._items), self._raw)
        h._raw_n = self._raw_n
        return h

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
