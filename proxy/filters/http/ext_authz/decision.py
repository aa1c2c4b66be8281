"""A CheckResponse as a decision the filter applies (and the cache keeps). Pure."""

from __future__ import annotations

from dataclasses import dataclass, field

from google.protobuf import json_format

from proxy.filters.http.ext_authz.cache import Validity

OK, DENIED, ERROR = "ok", "denied", "error"

Header = tuple[str, str, bool]  # (lower-case name, value, append)


@dataclass(frozen=True, slots=True)
class Decision:
    kind: str
    status: int = 403  # denied
    body: bytes = b""
    denied_headers: tuple[tuple[str, str], ...] = ()
    request_headers: tuple[Header, ...] = ()  # OK: to the upstream request
    headers_to_remove: tuple[str, ...] = ()
    response_headers_to_add: tuple[Header, ...] = ()
    validity: Validity | None = None
    # OK with nothing to do to the request or the response: the filter's whole work on a cache hit.
    plain_ok: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        plain = (
            self.kind == OK
            and not self.request_headers
            and not self.headers_to_remove
            and not self.response_headers_to_add
        )
        object.__setattr__(self, "plain_ok", plain)

    def apply_to_request(self, headers) -> bool:
        """Mutate the upstream request headers; True when anything changed."""
        changed = False
        for name, value, append in self.request_headers:
            if append:
                headers.add(name, value)
            else:
                headers.set(name, value)
            changed = True
        for name in self.headers_to_remove:
            if name in headers:
                headers.remove(name)
                changed = True
        return changed


def _headers(options, default_append: bool) -> tuple[Header, ...]:
    out = []
    for opt in options:
        name = opt.header.key.lower()
        if not name or name.startswith(":") or name == "host":
            continue  # Envoy refuses to let the auth server rewrite pseudo-headers
        value = opt.header.value or opt.header.raw_value.decode("utf-8", "replace")
        append = opt.append.value if opt.HasField("append") else default_append
        out.append((name, value, append))
    return tuple(out)


def _number(v) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def normalise_attribute(name: str) -> str:
    """``request.headers[x-user]`` (a synonym mixer accepts) -> ``request.headers.x-user``. A name the
    cache does not know would key every request the same, so synonyms must map to ours."""
    if name.startswith("request.headers[") and name.endswith("]"):
        return "request.headers." + name[len("request.headers[") : -1].lower()
    return name


def validity_from_metadata(struct) -> Validity | None:
    """Mixer's validity in CheckResponse.dynamic_metadata (docs/mixer.md); None when absent."""
    if not struct.fields:
        return None
    md = json_format.MessageToDict(struct)
    ms = _number(md.get("valid_duration_ms"))
    uses = _number(md.get("valid_use_count"))
    refs = md.get("referenced_attributes")
    v = Validity(
        duration=ms / 1000 if ms and ms > 0 else None,
        use_count=int(uses) if uses and uses > 0 else None,
        referenced=tuple(normalise_attribute(str(r)) for r in refs) if isinstance(refs, list) else None,
    )
    return v if v.cacheable else None


def decision_from_response(resp) -> Decision:
    validity = validity_from_metadata(resp.dynamic_metadata)
    if resp.status.code == 0:
        ok = resp.ok_response
        # ok_response.headers: append unless told otherwise? Envoy: append=false (the default) sets.
        return Decision(
            OK,
            request_headers=_headers(ok.headers, default_append=False),
            headers_to_remove=tuple(h.lower() for h in ok.headers_to_remove if not h.startswith(":")),
            response_headers_to_add=_headers(ok.response_headers_to_add, default_append=False),
            validity=validity,
        )
    denied = resp.denied_response
    status = denied.status.code if denied.HasField("status") and denied.status.code else 403
    if not 200 <= status < 600:
        status = 403
    return Decision(
        DENIED,
        status=status,
        body=denied.body.encode("utf-8"),
        denied_headers=tuple((n, v) for n, v, _ in _headers(denied.headers, default_append=False)),
        validity=validity,
    )
