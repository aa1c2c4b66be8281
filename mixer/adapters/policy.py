"""Policy checks: the ``denier`` and ``list`` adapters over a CheckRequest's attributes (pure).

Attributes are read from Envoy's ``envoy.service.auth.v3.CheckRequest`` as ext_authz fills it, named
in Mixer's vocabulary (the list in docs/mixer.md, which the proxy's check cache uses too):

``source.ip``/``source.port``            ``attributes.source.address.socket_address``
``source.principal``                     ``attributes.source.principal`` (the peer's SPIFFE id, mTLS)
``destination.ip``/``.port``/``.principal``  likewise for ``attributes.destination``
``request.method``/``scheme``/``protocol`` ``attributes.request.http.*``
``request.path``                         ``attributes.request.http.path``, with the query, as sent
``request.host``                         ``attributes.request.http.host`` without a port
``request.headers.<name>``               ``attributes.request.http.headers`` (else ``header_map``)
``context_extensions.<key>``             ``attributes.context_extensions``

Rules run in order. A rule whose ``match`` does not hold is skipped. The first rule that denies decides;
when none denies the request is allowed. The result's validity is the smallest validity of the rules
that were evaluated (the policy default when none was), and ``referenced`` lists the attributes the
decision read, so that a proxy can key its check cache on exactly those.
"""

from __future__ import annotations

from dataclasses import dataclass

from mixer.config.model import PolicyConfig, PolicyRule, Validity


@dataclass(frozen=True)
class Decision:
    allowed: bool
    validity: Validity
    referenced: tuple[str, ...]
    rule: str | None = None
    status_code: int = 0
    message: str = ""
    http_status: int = 200


def attribute(request, name: str) -> str | None:
    """The value of one attribute of a CheckRequest, or None when the request does not carry it."""
    attrs = request.attributes
    http = attrs.request.http
    if name.startswith("request.headers."):
        header = name[len("request.headers.") :]
        if header in http.headers:
            return http.headers[header]
        values = [
            h.value or h.raw_value.decode("utf-8", "replace")
            for h in http.header_map.headers
            if h.key.lower() == header
        ]
        return ",".join(values) if values else None
    if name.startswith("context_extensions."):
        return attrs.context_extensions.get(name[len("context_extensions.") :])
    getter = _GETTERS.get(name)
    if getter is None:
        raise KeyError(name)
    value = getter(attrs)
    return str(value) if value not in ("", None, 0) else None


def _host(host: str) -> str:
    if host.startswith("["):
        return host[1 : host.find("]")]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


_GETTERS = {
    "source.ip": lambda a: a.source.address.socket_address.address,
    "source.port": lambda a: a.source.address.socket_address.port_value,
    "source.principal": lambda a: a.source.principal,
    "destination.ip": lambda a: a.destination.address.socket_address.address,
    "destination.port": lambda a: a.destination.address.socket_address.port_value,
    "destination.principal": lambda a: a.destination.principal,
    "request.method": lambda a: a.request.http.method,
    "request.path": lambda a: a.request.http.path,
    "request.host": lambda a: _host(a.request.http.host),
    "request.scheme": lambda a: a.request.http.scheme,
    "request.protocol": lambda a: a.request.http.protocol,
}


def _denies(rule: PolicyRule, value: str | None) -> bool:
    if rule.kind == "denier":
        return True
    listed = rule.matcher.contains(value)
    return listed if rule.mode == "deny" else not listed


def check(policy: PolicyConfig, request) -> Decision:
    referenced: list[str] = []
    validity: Validity | None = None

    def read(name: str) -> str | None:
        if name not in referenced:
            referenced.append(name)
        return attribute(request, name)

    for rule in policy.rules:
        if any(read(attr) != expected for attr, expected in rule.match):
            continue
        value = read(rule.attribute) if rule.kind == "list" else None
        validity = rule.validity if validity is None else _tighter(validity, rule.validity)
        if _denies(rule, value):
            return Decision(
                allowed=False,
                validity=validity,
                referenced=tuple(referenced),
                rule=rule.name,
                status_code=rule.status_code,
                message=rule.status_message or _default_message(rule, value),
                http_status=rule.http_status,
            )
    return Decision(True, validity or policy.default_validity, tuple(referenced))


def _tighter(a: Validity, b: Validity) -> Validity:
    return Validity(min(a.duration_s, b.duration_s), min(a.use_count, b.use_count))


def _default_message(rule: PolicyRule, value: str | None) -> str:
    if rule.kind == "denier":
        return f"denied by rule {rule.name}"
    if rule.mode == "deny":
        return f"{rule.attribute} {value!r} is on the deny list of rule {rule.name}"
    return f"{rule.attribute} {value!r} is not on the allow list of rule {rule.name}"
