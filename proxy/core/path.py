"""Request path normalization as Envoy's HttpConnectionManager does it (and Istio configures it).

The pure part works on strings only:

- ``strip_fragment``: a ``#`` in the request target starts a fragment, which never goes upstream.
- ``unescape_slashes``: ``%2F``/``%5C`` (any case) become ``/`` and ``\\``
  (``path_with_escaped_slashes_action`` UNESCAPE_AND_REDIRECT / UNESCAPE_AND_FORWARD).
- ``canonicalize``: RFC 3986 normalization of the path part (``normalize_path: true``): percent-encoded
  unreserved characters are decoded, other escapes get upper-case hex, ``\\`` becomes ``/`` (as
  Chromium's URL canonicalizer that Envoy uses), bytes that may not appear in a path are
  percent-encoded (a stray ``%`` too, which keeps normalization idempotent), and dot segments (``.``, ``..``, in any encoding) are resolved. ``None`` means the
  path is not valid (not starting with ``/``, or carrying a control character): a 400.
- ``merge_slashes``: runs of ``/`` become one (``merge_slashes: true``).

The query is never touched. Istio's ``DECODE_AND_MERGE_SLASHES`` is normalize_path + merge_slashes +
UNESCAPE_AND_FORWARD: percent-decoded, slashes merged, dot segments resolved, fragment stripped.

``RequestPathNormalizer`` is the compiled HCM setting; its ``apply`` is the single hook the connection
manager calls before route matching (see ``manager.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.PathWithEscapedSlashesAction
IMPLEMENTATION_SPECIFIC_DEFAULT = 0
KEEP_UNCHANGED = 1
REJECT_REQUEST = 2
UNESCAPE_AND_REDIRECT = 3
UNESCAPE_AND_FORWARD = 4

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = frozenset("0123456789abcdefABCDEF")
# Characters kept literally in a canonical path (RFC 3986 pchar plus '/', and '%' for escapes);
# anything else printable is percent-encoded.
_PATH_SAFE = _UNRESERVED | frozenset("!$&'()*+,;=:@/%")
_ESCAPED_SLASH = re.compile(r"%(2[fF]|5[cC])")
_SLASH_RUN = re.compile(r"//+")


def strip_fragment(target: str) -> str:
    """Everything from the first ``#`` on is dropped."""
    i = target.find("#")
    return target if i < 0 else target[:i]


def split_query(target: str) -> tuple[str, str]:
    """(path, query-including-'?'); the query may be empty."""
    i = target.find("?")
    return (target, "") if i < 0 else (target[:i], target[i:])


def has_escaped_slashes(path: str) -> bool:
    return _ESCAPED_SLASH.search(path) is not None


def unescape_slashes(path: str) -> str:
    return _ESCAPED_SLASH.sub(lambda m: "/" if m.group(1) in ("2f", "2F") else "\\", path)


def merge_slashes(path: str) -> str:
    return _SLASH_RUN.sub("/", path)


def _canonical_chars(path: str) -> str | None:
    out: list[str] = []
    i, n = 0, len(path)
    while i < n:
        c = path[i]
        if c == "%" and i + 2 < n and path[i + 1] in _HEX and path[i + 2] in _HEX:
            ch = chr(int(path[i + 1 : i + 3], 16))
            out.append(ch if ch in _UNRESERVED else "%" + path[i + 1 : i + 3].upper())
            i += 3
            continue
        if c == "%":
            out.append("%25")  # a stray '%' is encoded, or "%%61a" -> "%aa" would decode again next time
        elif c == "\\":
            out.append("/")
        elif c in _PATH_SAFE:
            out.append(c)
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            return None
        else:
            out.extend(f"%{b:02X}" for b in c.encode("utf-8"))
        i += 1
    return "".join(out)


def remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4 for an absolute path: the result starts with '/' and has no dot segment."""
    segments = path.split("/")[1:]
    out: list[str] = []
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == ".":
            if last:
                out.append("")
        elif seg == "..":
            if out:
                out.pop()
            if last:
                out.append("")
        else:
            out.append(seg)
    return "/" + "/".join(out)


def canonicalize(path: str) -> str | None:
    """The canonical form of an absolute path (no query, no fragment), or None when it is invalid."""
    if not path.startswith("/"):
        return None
    chars = _canonical_chars(path)
    if chars is None:
        return None
    return remove_dot_segments(chars)


@dataclass(frozen=True)
class Outcome:
    """What happens to a request target: forward ``path`` / redirect to ``path`` / reject (400)."""

    action: str  # "forward" | "redirect" | "reject"
    path: str = ""


def normalize_request_target(
    target: str, *, normalize: bool, merge: bool, escaped_slashes: int = KEEP_UNCHANGED
) -> Outcome:
    """Envoy's order: strip the fragment, handle escaped slashes, canonicalize, then merge slashes."""
    target = strip_fragment(target)
    path, query = split_query(target)
    redirect = False
    if escaped_slashes in (
        REJECT_REQUEST,
        UNESCAPE_AND_REDIRECT,
        UNESCAPE_AND_FORWARD,
    ) and has_escaped_slashes(path):
        if escaped_slashes == REJECT_REQUEST:
            return Outcome("reject")
        path = unescape_slashes(path)
        redirect = escaped_slashes == UNESCAPE_AND_REDIRECT
    if normalize:
        canon = canonicalize(path)
        if canon is None:
            return Outcome("reject")
        path = canon
    if merge:
        path = merge_slashes(path)
    return Outcome("redirect" if redirect else "forward", path + query)


class RequestPathNormalizer:
    """The HCM's compiled path settings; ``apply`` rewrites ``:path`` or answers the request itself.

    ``stats`` needs ``failed`` and ``redirected`` counters (``downstream_rq_failed_path_normalization``,
    ``downstream_rq_redirected_with_normalized_path``). ``stream`` needs ``local_reply_now`` (the HCM's
    ActiveStream). Returns False when the request was answered (400 or 307) and must go no further.
    """

    __slots__ = ("normalize", "merge", "escaped_slashes", "stats", "_noop")

    def __init__(self, *, normalize: bool, merge: bool, escaped_slashes: int, stats) -> None:
        self.normalize = normalize
        self.merge = merge
        self.escaped_slashes = escaped_slashes
        self.stats = stats
        # Fragments are always stripped (Envoy's codec does it by default); nothing else to do then.
        self._noop = not normalize and not merge and escaped_slashes not in (2, 3, 4)

    def apply(self, stream, headers, end_stream: bool) -> bool:
        target = headers.get(":path")
        if target is None or target[:1] != "/":
            return True  # OPTIONS * and CONNECT carry no path to normalize
        if self._noop and "#" not in target:
            return True
        out = normalize_request_target(
            target, normalize=self.normalize, merge=self.merge, escaped_slashes=self.escaped_slashes
        )
        if out.action == "reject":
            self.stats.failed.inc()
            stream.local_reply_now(400, b"", None, "path_normalization_failed", close=not end_stream)
            return False
        if out.action == "redirect":
            self.stats.redirected.inc()
            _redirect_now(stream, out.path, close=not end_stream)
            return False
        if out.path != target:
            headers.set(":path", out.path)
        return True


def _redirect_now(stream, location: str, close: bool) -> None:
    """A 307 to the normalized path, answered before any filter ran.

    ActiveStream.local_reply_now takes no extra headers, so this writes the head the way it does
    (response_code_details, close, ``_write_headers`` with end_stream). Kept here so manager.py
    carries a single hook.
    """
    from proxy.core.headers import Headers

    stream.stream_info.response_code_details = "path_normalization_failed"
    if close:
        stream._close = True
    stream._write_headers(Headers.from_lowercase([(":status", "307"), ("location", location)]), True)
