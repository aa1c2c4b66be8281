"""mixer's configuration: parse and validate one YAML document into an immutable snapshot (pure).

The whole file is checked before anything is used: one bad field rejects the file, with the file name,
the path of the field (``policy.rules[1].list.entryType``) and what was expected. Unknown fields are
errors too, never ignored. Layout (every section optional)::

    policy:
      defaultValidDuration: 10s        # how long the proxy may cache a check result
      defaultValidUseCount: 10000      # and for how many uses
      rules:                           # evaluated in order; the first rule that denies wins
      - name: deny-sleep
        match: {request.host: productpage}          # optional: attribute -> exact value
        list:
          attribute: source.principal  # source.ip | source.port | source.principal | destination.ip |
                                       # destination.port | destination.principal | request.method |
                                       # request.path | request.host | request.scheme | request.protocol |
                                       # request.headers.<name> | context_extensions.<key>
          entryType: STRINGS           # STRINGS | CASE_INSENSITIVE_STRINGS | IP_ADDRESSES | REGEX
          entries: ["spiffe://cluster.local/ns/default/sa/sleep"]
          mode: deny                   # deny: listed values are denied; allow: only listed ones pass
        status: {code: PERMISSION_DENIED, message: "not allowed"}   # optional
        httpStatus: 403                                           # optional
        validDuration: 5s              # optional, else the defaults
        validUseCount: 100
      - name: maintenance
        denier: {}                     # always deny (same optional status/httpStatus)
    quota:
      failureMode: open                # what happens when Redis is unreachable: open (allow) | closed
      domains:                         # envoyproxy/ratelimit's config, one entry per domain
      - domain: productpage-ratelimit
        descriptors:
        - key: PATH
          value: /productpage
          rate_limit: {unit: second, requests_per_unit: 10}
          shadow_mode: false
          descriptors: [...]           # nested, as in envoyproxy/ratelimit
    telemetry:
      maxSeriesPerMetric: 5000         # bound on label combinations per istio_* metric
      accessLog: {path: "-"}           # JSON lines to stdout ("-") or a file; absent: off
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

GRPC_CODES = {
    "OK": 0,
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}
# Mixer's attribute vocabulary, as docs/mixer.md lists it for the check cache's referenced_attributes
PLAIN_ATTRIBUTES = (
    "source.ip",
    "source.port",
    "source.principal",
    "destination.ip",
    "destination.port",
    "destination.principal",
    "request.method",
    "request.path",
    "request.host",
    "request.scheme",
    "request.protocol",
)
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_HEADER_ATTR = re.compile(rf"^request\.headers(?:\[({_TOKEN})\]|\.({_TOKEN}))$")
_EXTENSION_ATTR = re.compile(r"^context_extensions\.(.+)$")
ENTRY_TYPES = ("STRINGS", "CASE_INSENSITIVE_STRINGS", "IP_ADDRESSES", "REGEX")
UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
FAILURE_MODES = ("open", "closed")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class Validity:
    duration_s: float
    use_count: int


@dataclass(frozen=True)
class ListMatcher:
    entry_type: str
    entries: tuple[str, ...]
    networks: tuple = ()
    patterns: tuple = ()

    def contains(self, value: str | None) -> bool:
        if value is None or value == "":
            return False
        if self.entry_type == "STRINGS":
            return value in self.entries
        if self.entry_type == "CASE_INSENSITIVE_STRINGS":
            return value.lower() in self.entries
        if self.entry_type == "REGEX":
            return any(p.fullmatch(value) for p in self.patterns)
        try:
            ip = ipaddress.ip_address(value)
        except ValueError:
            return False
        return any(ip in net for net in self.networks)


@dataclass(frozen=True)
class PolicyRule:
    name: str
    kind: str  # "denier" | "list"
    match: tuple[tuple[str, str], ...]
    validity: Validity
    status_code: int = GRPC_CODES["PERMISSION_DENIED"]
    status_message: str = ""
    http_status: int = 403
    attribute: str = ""
    mode: str = "deny"  # list: "deny" (deny-list) or "allow" (allow-list)
    matcher: ListMatcher | None = None


@dataclass(frozen=True)
class PolicyConfig:
    default_validity: Validity = Validity(10.0, 10000)
    rules: tuple[PolicyRule, ...] = ()


@dataclass(frozen=True)
class RateLimit:
    unit: str
    requests_per_unit: int
    unlimited: bool = False

    @property
    def window_s(self) -> int:
        return UNITS[self.unit]


@dataclass(frozen=True)
class DescriptorNode:
    key: str
    value: str | None
    rate_limit: RateLimit | None
    shadow_mode: bool
    children: tuple[DescriptorNode, ...] = ()

    def child(self, key: str, value: str) -> DescriptorNode | None:
        return find_node(self.children, key, value)


def find_node(nodes: tuple[DescriptorNode, ...], key: str, value: str) -> DescriptorNode | None:
    """envoyproxy/ratelimit's lookup: an exact key+value first, then a key with no value (any value)."""
    fallback = None
    for node in nodes:
        if node.key != key:
            continue
        if node.value == value:
            return node
        if node.value is None and fallback is None:
            fallback = node
    return fallback


@dataclass(frozen=True)
class QuotaConfig:
    failure_mode: str = "open"
    domains: dict[str, tuple[DescriptorNode, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class TelemetryConfig:
    max_series_per_metric: int = 5000
    access_log_path: str | None = None


@dataclass(frozen=True)
class MixerConfig:
    policy: PolicyConfig = PolicyConfig()
    quota: QuotaConfig = QuotaConfig()
    telemetry: TelemetryConfig = TelemetryConfig()


def check_attribute(name: str) -> str:
    if name in PLAIN_ATTRIBUTES:
        return name
    m = _HEADER_ATTR.match(name)
    if m:
        return f"request.headers.{(m.group(1) or m.group(2)).lower()}"
    if _EXTENSION_ATTR.match(name):
        return name
    raise ValueError(
        f"unknown attribute {name!r}; expected one of {', '.join(PLAIN_ATTRIBUTES)}, "
        "request.headers.<name> or context_extensions.<key>"
    )


class _Walker:
    """Reads a YAML tree and raises ConfigError naming the file and the field path."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {path}: {message}" if path else f"{self.source}: {message}")

    def mapping(self, value: Any, path: str, allowed: tuple[str, ...]) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(path, f"expected a mapping, got {type(value).__name__}")
        for key in value:
            if key not in allowed:
                raise self.fail(
                    f"{path}.{key}" if path else str(key),
                    f"unsupported field; expected one of {', '.join(allowed)}",
                )
        return value

    def seq(self, value: Any, path: str) -> list:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(path, f"expected a list, got {type(value).__name__}")
        return value

    def string(self, value: Any, path: str, required: bool = True) -> str | None:
        if value is None and not required:
            return None
        if isinstance(value, bool) or not isinstance(value, str | int | float) or value == "":
            raise self.fail(path, "expected a non-empty string")
        return str(value)

    def integer(self, value: Any, path: str, minimum: int = 0) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(path, f"expected an integer >= {minimum}, got {value!r}")
        return value

    def boolean(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(path, f"expected true or false, got {value!r}")
        return value

    def duration(self, value: Any, path: str) -> float:
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            return float(value)
        text = str(value)
        pos, total = 0, 0.0
        for m in _DURATION.finditer(text):
            if m.start() != pos:
                break
            total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
            pos = m.end()
        if pos != len(text) or not text or total <= 0:
            raise self.fail(path, f"expected a positive duration like 10s, 500ms or 1m, got {value!r}")
        return total

    def choice(self, value: Any, path: str, choices: tuple[str, ...]) -> str:
        if value not in choices:
            raise self.fail(path, f"expected one of {', '.join(choices)}, got {value!r}")
        return value


def parse(text: str, source: str = "<config>") -> MixerConfig:
    """Parse YAML text into a MixerConfig; raise ConfigError naming the file and field."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML: {e}") from None
    return build(doc, source)


def build(doc: Any, source: str = "<config>") -> MixerConfig:
    w = _Walker(source)
    top = w.mapping(doc, "", ("policy", "quota", "telemetry"))
    return MixerConfig(
        policy=_policy(w, top.get("policy")),
        quota=_quota(w, top.get("quota")),
        telemetry=_telemetry(w, top.get("telemetry")),
    )


def _status(w: _Walker, value: Any, path: str) -> tuple[int, str]:
    st = w.mapping(value, path, ("code", "message"))
    code = st.get("code", "PERMISSION_DENIED")
    if isinstance(code, str):
        if code not in GRPC_CODES:
            raise w.fail(
                f"{path}.code", f"unknown gRPC status {code!r}; expected one of {', '.join(GRPC_CODES)}"
            )
        code = GRPC_CODES[code]
    elif isinstance(code, bool) or not isinstance(code, int) or not 1 <= code <= 16:
        raise w.fail(f"{path}.code", f"expected a gRPC status name or a code 1-16, got {code!r}")
    message = st.get("message", "")
    if not isinstance(message, str):
        raise w.fail(f"{path}.message", "expected a string")
    return code, message


def _policy(w: _Walker, value: Any) -> PolicyConfig:
    pol = w.mapping(value, "policy", ("defaultValidDuration", "defaultValidUseCount", "rules"))
    default = Validity(
        w.duration(pol.get("defaultValidDuration", "10s"), "policy.defaultValidDuration"),
        w.integer(pol.get("defaultValidUseCount", 10000), "policy.defaultValidUseCount", 1),
    )
    rules, names = [], set()
    for i, raw in enumerate(w.seq(pol.get("rules"), "policy.rules")):
        path = f"policy.rules[{i}]"
        r = w.mapping(
            raw,
            path,
            ("name", "match", "denier", "list", "status", "httpStatus", "validDuration", "validUseCount"),
        )
        name = w.string(r.get("name"), f"{path}.name")
        if name in names:
            raise w.fail(f"{path}.name", f"duplicate rule name {name!r}")
        names.add(name)
        kinds = [k for k in ("denier", "list") if k in r]
        if len(kinds) != 1:
            raise w.fail(path, "expected exactly one adapter: denier or list")
        match = []
        for attr, expected in w.mapping(r.get("match"), f"{path}.match", tuple(r.get("match") or ())).items():
            try:
                attr = check_attribute(str(attr))
            except ValueError as e:
                raise w.fail(f"{path}.match.{attr}", str(e)) from None
            match.append((attr, w.string(expected, f"{path}.match.{attr}")))
        code, message = _status(w, r.get("status"), f"{path}.status")
        http_status = w.integer(r.get("httpStatus", 403), f"{path}.httpStatus", 100)
        if http_status > 599:
            raise w.fail(f"{path}.httpStatus", f"expected an HTTP status 100-599, got {http_status}")
        validity = Validity(
            w.duration(r.get("validDuration", default.duration_s), f"{path}.validDuration"),
            w.integer(r.get("validUseCount", default.use_count), f"{path}.validUseCount", 1),
        )
        common = dict(
            name=name,
            match=tuple(match),
            validity=validity,
            status_code=code,
            status_message=message,
            http_status=http_status,
        )
        if kinds[0] == "denier":
            d = w.mapping(r["denier"], f"{path}.denier", ("status",))
            if "status" in d:  # the denier may carry its own status, as Mixer's denier adapter did
                common["status_code"], common["status_message"] = _status(
                    w, d["status"], f"{path}.denier.status"
                )
            rules.append(PolicyRule(kind="denier", **common))
        else:
            rules.append(_list_rule(w, r["list"], f"{path}.list", common))
    return PolicyConfig(default, tuple(rules))


def _list_rule(w: _Walker, value: Any, path: str, common: dict) -> PolicyRule:
    spec = w.mapping(value, path, ("attribute", "entryType", "entries", "mode"))
    try:
        attribute = check_attribute(w.string(spec.get("attribute"), f"{path}.attribute"))
    except ValueError as e:
        raise w.fail(f"{path}.attribute", str(e)) from None
    entry_type = w.choice(spec.get("entryType", "STRINGS"), f"{path}.entryType", ENTRY_TYPES)
    mode = w.choice(spec.get("mode", "deny"), f"{path}.mode", ("deny", "allow"))
    entries = tuple(
        w.string(e, f"{path}.entries[{j}]")
        for j, e in enumerate(w.seq(spec.get("entries"), f"{path}.entries"))
    )
    networks, patterns = [], []
    for j, e in enumerate(entries):
        if entry_type == "IP_ADDRESSES":
            try:
                networks.append(ipaddress.ip_network(e, strict=False))
            except ValueError:
                raise w.fail(f"{path}.entries[{j}]", f"not an IP address or CIDR: {e!r}") from None
        elif entry_type == "REGEX":
            try:
                patterns.append(re.compile(e))
            except re.error as err:
                raise w.fail(f"{path}.entries[{j}]", f"bad regex {e!r}: {err}") from None
    if entry_type == "CASE_INSENSITIVE_STRINGS":
        entries = tuple(e.lower() for e in entries)
    matcher = ListMatcher(entry_type, entries, tuple(networks), tuple(patterns))
    return PolicyRule(kind="list", attribute=attribute, mode=mode, matcher=matcher, **common)


def _quota(w: _Walker, value: Any) -> QuotaConfig:
    q = w.mapping(value, "quota", ("failureMode", "domains"))
    mode = w.choice(q.get("failureMode", "open"), "quota.failureMode", FAILURE_MODES)
    domains: dict[str, tuple[DescriptorNode, ...]] = {}
    for i, raw in enumerate(w.seq(q.get("domains"), "quota.domains")):
        path = f"quota.domains[{i}]"
        d = w.mapping(raw, path, ("domain", "descriptors"))
        name = w.string(d.get("domain"), f"{path}.domain")
        if name in domains:
            raise w.fail(f"{path}.domain", f"duplicate domain {name!r}")
        domains[name] = _descriptors(w, d.get("descriptors"), f"{path}.descriptors")
    return QuotaConfig(mode, domains)


def _descriptors(w: _Walker, value: Any, path: str) -> tuple[DescriptorNode, ...]:
    nodes, seen = [], set()
    for i, raw in enumerate(w.seq(value, path)):
        p = f"{path}[{i}]"
        d = w.mapping(raw, p, ("key", "value", "rate_limit", "shadow_mode", "descriptors"))
        key = w.string(d.get("key"), f"{p}.key")
        val = w.string(d.get("value"), f"{p}.value", required=False)
        if (key, val) in seen:
            raise w.fail(p, f"duplicate descriptor key {key!r} value {val!r}")
        seen.add((key, val))
        limit = None
        if d.get("rate_limit") is not None:
            rl = w.mapping(d["rate_limit"], f"{p}.rate_limit", ("unit", "requests_per_unit", "unlimited"))
            unlimited = w.boolean(rl.get("unlimited", False), f"{p}.rate_limit.unlimited")
            if unlimited:
                limit = RateLimit("second", 0, True)
            else:
                unit = w.choice(str(rl.get("unit", "")).lower(), f"{p}.rate_limit.unit", tuple(UNITS))
                rpu = w.integer(rl.get("requests_per_unit"), f"{p}.rate_limit.requests_per_unit", 0)
                limit = RateLimit(unit, rpu)
        nodes.append(
            DescriptorNode(
                key,
                val,
                limit,
                w.boolean(d.get("shadow_mode", False), f"{p}.shadow_mode"),
                _descriptors(w, d.get("descriptors"), f"{p}.descriptors"),
            )
        )
    return tuple(nodes)


def _telemetry(w: _Walker, value: Any) -> TelemetryConfig:
    t = w.mapping(value, "telemetry", ("maxSeriesPerMetric", "accessLog"))
    max_series = w.integer(t.get("maxSeriesPerMetric", 5000), "telemetry.maxSeriesPerMetric", 1)
    path = None
    if t.get("accessLog") is not None:
        al = w.mapping(t["accessLog"], "telemetry.accessLog", ("path",))
        path = w.string(al.get("path", "-"), "telemetry.accessLog.path")
    return TelemetryConfig(max_series, path)
