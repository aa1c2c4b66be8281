"""Path normalization (proxy.core.path): Envoy's normalize_path / merge_slashes / escaped slashes."""

from __future__ import annotations

from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.core import path as p
from proxy.core.headers import Headers


def istio(target: str) -> p.Outcome:
    """Istio's DECODE_AND_MERGE_SLASHES."""
    return p.normalize_request_target(
        target, normalize=True, merge=True, escaped_slashes=p.UNESCAPE_AND_FORWARD
    )


@pytest.mark.parametrize(
    "target",
    ["/admin/../admin", "//admin", "/%61dmin", "/public/%2e%2e/admin", "/admin#x", "/%2e/admin", "/./admin"],
)
def test_attack_paths_normalize_to_admin(target):
    assert istio(target) == p.Outcome("forward", "/admin")


def test_query_is_kept_and_untouched():
    assert istio("/admin?x").path == "/admin?x"
    assert istio("/a/../b?q=/../%61//#frag").path == "/b?q=/../%61//"


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("/", "/"),
        ("/a/b/c", "/a/b/c"),
        ("/a/./b", "/a/b"),
        ("/a/b/.", "/a/b/"),
        ("/a/b/..", "/a/"),
        ("/a/b/../../..", "/"),
        ("/../../etc/passwd", "/etc/passwd"),
        ("/a/%2E%2e/b", "/b"),
        ("/a/.%2e/b", "/b"),
        ("/%7euser", "/~user"),
        ("/%41%42%2d%5f", "/AB-_"),
        ("/a%2fb", "/a%2Fb"),  # a reserved escape stays escaped, hex upper-cased
        ("/a%3fb", "/a%3Fb"),
        ("/%25", "/%25"),  # '%' itself stays encoded: no double decoding
        ("/%252e%252e/x", "/%252e%252e/x"),
        ("/a b", "/a%20b"),
        ("/caf\u00e9", "/caf%C3%A9"),
        ("/a\\b", "/a/b"),
        ("/a\\..\\b", "/b"),
        ("/%zz", "/%25zz"),  # a stray percent is encoded
        ("/%%61a", "/%25aa"),
        ("/a//b", "/a//b"),  # merging is a separate setting
        ("/a:b@c!$&'()*+,;=", "/a:b@c!$&'()*+,;="),
    ],
)
def test_canonicalize(raw, expected):
    assert p.canonicalize(raw) == expected


@pytest.mark.parametrize("raw", ["", "admin", "*", "/a\x00b", "/a\x7fb", "/a\tb"])
def test_canonicalize_rejects_invalid_paths(raw):
    assert p.canonicalize(raw) is None


def test_merge_slashes():
    assert p.merge_slashes("///a//b///c/") == "/a/b/c/"


def test_fragment_is_stripped_even_after_the_query():
    assert p.strip_fragment("/a?b#c#d") == "/a?b"
    assert p.normalize_request_target("/a#b", normalize=False, merge=False).path == "/a"


def test_escaped_slashes_keep_unchanged():
    out = p.normalize_request_target(
        "/a%2F..%2fb", normalize=True, merge=True, escaped_slashes=p.KEEP_UNCHANGED
    )
    assert out == p.Outcome("forward", "/a%2F..%2Fb")


def test_escaped_slashes_reject():
    out = p.normalize_request_target("/a%5cb", normalize=True, merge=True, escaped_slashes=p.REJECT_REQUEST)
    assert out.action == "reject"
    ok = p.normalize_request_target("/a/b", normalize=True, merge=True, escaped_slashes=p.REJECT_REQUEST)
    assert ok == p.Outcome("forward", "/a/b")


def test_escaped_slashes_unescape_and_redirect():
    out = p.normalize_request_target(
        "/a%2F%2Fb?q=1", normalize=True, merge=True, escaped_slashes=p.UNESCAPE_AND_REDIRECT
    )
    assert out == p.Outcome("redirect", "/a/b?q=1")


def test_escaped_slashes_unescape_and_forward_resolves_hidden_dot_segments():
    assert istio("/public%2F..%2Fadmin").path == "/admin"
    assert istio("/public%5C..%5Cadmin").path == "/admin"


def test_normalize_off_merge_on():
    assert p.normalize_request_target("//a/../b", normalize=False, merge=True).path == "/a/../b"


def test_invalid_path_rejected_when_normalizing():
    assert istio("/a\x01").action == "reject"


# --------------------------------------------------------------- properties

_path_chars = st.sampled_from(
    list("ab/.%2eEfF5cC\\?#~-_ ") + ["%2e", "%2E", "%2f", "%5c", "..", "%61", "%25"]
)
_targets = st.lists(_path_chars, max_size=30).map(lambda xs: "/" + "".join(xs))


def _segments(path: str) -> list[str]:
    return path.split("?", 1)[0].split("/")


@settings(max_examples=300, deadline=None)
@given(_targets)
def test_istio_normalization_is_idempotent(target):
    once = istio(target)
    assert once.action == "forward"
    assert istio(once.path) == once


@settings(max_examples=300, deadline=None)
@given(_targets, st.booleans(), st.sampled_from([p.KEEP_UNCHANGED, p.UNESCAPE_AND_FORWARD]))
def test_normalized_path_never_escapes_the_root(target, merge, escaped):
    out = p.normalize_request_target(target, normalize=True, merge=merge, escaped_slashes=escaped)
    assert out.path.startswith("/")
    assert ".." not in _segments(out.path)
    assert "." not in _segments(out.path)


@settings(max_examples=300, deadline=None)
@given(_targets)
def test_decoded_output_has_no_dot_segments(target):
    decoded = unquote(istio(target).path.split("?", 1)[0])
    assert "#" not in istio(target).path
    assert not any(seg in (".", "..") for seg in decoded.split("/"))
    assert "//" not in istio(target).path.split("?", 1)[0]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_arbitrary_text_never_crashes(text):
    out = istio("/" + text)
    if out.action == "forward":
        assert out.path.startswith("/")


# --------------------------------------------------------------- the HCM hook


class _Counter:
    def __init__(self):
        self.value = 0

    def inc(self):
        self.value += 1


class _Stats:
    def __init__(self):
        self.failed = _Counter()
        self.redirected = _Counter()


class _StreamInfo:
    response_code_details = ""


class _Stream:
    def __init__(self):
        self.replies = []
        self.heads = []
        self.stream_info = _StreamInfo()
        self._close = False

    def local_reply_now(self, status, body, flag, details, close=False):
        self.replies.append((status, details, close))

    def _write_headers(self, headers, end_stream):
        self.heads.append((headers, end_stream))


def _normalizer(**kw):
    args = dict(normalize=True, merge=True, escaped_slashes=p.UNESCAPE_AND_FORWARD, stats=_Stats())
    args.update(kw)
    return p.RequestPathNormalizer(**args)


def test_apply_rewrites_path_header_for_routing():
    n = _normalizer()
    h = Headers([(":method", "GET"), (":path", "/public/%2e%2e/admin?x=1#frag")])
    assert n.apply(_Stream(), h, True) is True
    assert h.get(":path") == "/admin?x=1"


def test_apply_rejects_with_400_and_counts():
    n = _normalizer(escaped_slashes=p.REJECT_REQUEST)
    s = _Stream()
    assert n.apply(s, Headers([(":path", "/a%2fb")]), False) is False
    assert s.replies == [(400, "path_normalization_failed", True)]
    assert n.stats.failed.value == 1


def test_apply_redirects_with_307_location():
    n = _normalizer(escaped_slashes=p.UNESCAPE_AND_REDIRECT)
    s = _Stream()
    assert n.apply(s, Headers([(":path", "/a%2fb")]), True) is False
    ((head, end),) = s.heads
    assert head.get(":status") == "307" and head.get("location") == "/a/b" and end
    assert n.stats.redirected.value == 1


def test_apply_without_settings_only_strips_fragments():
    n = _normalizer(normalize=False, merge=False, escaped_slashes=p.KEEP_UNCHANGED)
    h = Headers([(":path", "//a/../b#f")])
    assert n.apply(_Stream(), h, True)
    assert h.get(":path") == "//a/../b"
    h2 = Headers([(":path", "*")])
    assert n.apply(_Stream(), h2, True) and h2.get(":path") == "*"
