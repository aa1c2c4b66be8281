"""Compiled route actions: cluster selection, rewrites, timeouts, retry/hash/mirror policies,
redirects and direct responses. Pure: no I/O."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from proxy.config.errors import ConfigError
from proxy.config.supported import reject_unsupported
from proxy.core.headers import Headers
from proxy.router.header_mutation import HeaderMutation, compile_mutation
from proxy.router.matchers import compile_regex, parse_query
from proxy.router.percent import Fraction

DEFAULT_ROUTE_TIMEOUT = 15.0  # Envoy's default route timeout (seconds)
DEFAULT_RETRY_BASE_INTERVAL = 0.025
MAX_DIRECT_RESPONSE_BODY = 4096  # Envoy's default max_direct_response_body_size_bytes


def duration_seconds(d) -> float:
    return d.seconds + d.nanos / 1e9


# ---------------------------------------------------------------------------------------------
# Retry policy

RETRY_5XX = 1
RETRY_GATEWAY_ERROR = 2
RETRY_CONNECT_FAILURE = 4
RETRY_RESET = 8
RETRY_RETRIABLE_4XX = 16
RETRY_RETRIABLE_STATUS_CODES = 32

_RETRY_ON = {
    "5xx": RETRY_5XX,
    "gateway-error": RETRY_GATEWAY_ERROR,
    "connect-failure": RETRY_CONNECT_FAILURE,
    "reset": RETRY_RESET,
    "retriable-4xx": RETRY_RETRIABLE_4XX,
    "retriable-status-codes": RETRY_RETRIABLE_STATUS_CODES,
}

RETRY_POLICY_SPEC = {
    "retry_on": True,
    "num_retries": True,
    "per_try_timeout": True,
    "retriable_status_codes": True,
    "retry_back_off": {"base_interval": True, "max_interval": True},
}


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    retry_on: int
    num_retries: int = 1
    per_try_timeout: float | None = None
    retriable_status_codes: frozenset[int] = frozenset()
    base_interval: float = DEFAULT_RETRY_BASE_INTERVAL
    max_interval: float = DEFAULT_RETRY_BASE_INTERVAL * 10

    def retriable_status(self, status: int) -> bool:
        on = self.retry_on
        if on & RETRY_5XX and 500 <= status < 600:
            return True
        if on & RETRY_GATEWAY_ERROR and status in (502, 503, 504):
            return True
        if on & RETRY_RETRIABLE_4XX and status == 409:
            return True
        if on & RETRY_RETRIABLE_STATUS_CODES and status in self.retriable_status_codes:
            return True
        return False

    def retriable_reset(self, connect_failure: bool) -> bool:
        """Resets (and per-try timeouts) retry under 5xx, gateway-error and reset; a connection
        failure also under connect-failure (Envoy's RetryStateImpl::wouldRetryFromReset)."""
        if self.retry_on & (RETRY_5XX | RETRY_GATEWAY_ERROR | RETRY_RESET):
            return True
        return connect_failure and bool(self.retry_on & RETRY_CONNECT_FAILURE)

    def backoff(self, retry_number: int, random_value: int) -> float:
        """Envoy's fully jittered exponential back-off: uniform in [0, min((2^N - 1) * base, max))
        for retry N (1-based), in seconds. ``random_value`` is any non-negative integer."""
        ceiling_ms = min(((1 << retry_number) - 1) * self.base_interval, self.max_interval) * 1000
        ceiling = int(ceiling_ms)
        if ceiling <= 0:
            return 0.0
        return (random_value % ceiling) / 1000


def compile_retry_policy(msg, path: str) -> RetryPolicy:
    reject_unsupported(msg, RETRY_POLICY_SPEC, path)
    on = 0
    for token in msg.retry_on.split(","):
        token = token.strip()
        if not token:
            continue
        bit = _RETRY_ON.get(token)
        if bit is None:
            raise ConfigError(
                f"{path}.retry_on",
                f"retry_on '{token}' is not supported by Isthmus (supported: {', '.join(_RETRY_ON)})",
            )
        on |= bit
    base = DEFAULT_RETRY_BASE_INTERVAL
    max_interval = None
    if msg.HasField("retry_back_off"):
        bo = msg.retry_back_off
        if not bo.HasField("base_interval") or duration_seconds(bo.base_interval) <= 0:
            raise ConfigError(
                f"{path}.retry_back_off.base_interval", "base_interval must be greater than zero"
            )
        base = duration_seconds(bo.base_interval)
        if bo.HasField("max_interval"):
            max_interval = duration_seconds(bo.max_interval)
            if max_interval < base:
                raise ConfigError(
                    f"{path}.retry_back_off.max_interval",
                    "max_interval must be greater than or equal to base_interval",
                )
    per_try = duration_seconds(msg.per_try_timeout) if msg.HasField("per_try_timeout") else 0.0
    return RetryPolicy(
        retry_on=on,
        num_retries=msg.num_retries.value if msg.HasField("num_retries") else 1,
        per_try_timeout=per_try or None,
        retriable_status_codes=frozenset(msg.retriable_status_codes),
        base_interval=base,
        max_interval=max_interval if max_interval is not None else base * 10,
    )


# ---------------------------------------------------------------------------------------------
# Hash policy


def stable_hash(value: str) -> int:
    """A 64-bit hash that is the same in every process (Python's hash() is salted per process)."""
    return int.from_bytes(
        hashlib.blake2b(value.encode("utf-8", "surrogateescape"), digest_size=8).digest(), "big"
    )


HASH_POLICY_SPEC = {
    "header": {"header_name": True},
    "cookie": {"name": True},
    "connection_properties": {"source_ip": True},
    "query_parameter": {"name": True},
    "terminal": True,
}


@dataclass(frozen=True, slots=True)
class HashPolicyEntry:
    kind: str  # "header", "cookie", "source_ip", "query_parameter"
    name: str
    terminal: bool

    def value(self, headers: Headers, remote_address: tuple[str, int] | None) -> str | None:
        if self.kind == "header":
            values = headers.get_all(self.name)
            return ",".join(values) if values else None
        if self.kind == "source_ip":
            return remote_address[0] if remote_address else None
        if self.kind == "query_parameter":
            return parse_query(headers.get(":path") or "").get(self.name)
        for cookie_header in headers.get_all("cookie"):  # cookie
            for part in cookie_header.split(";"):
                k, sep, v = part.strip().partition("=")
                if sep and k == self.name:
                    return v
        return None


def compile_hash_policy(policies, path: str) -> tuple[HashPolicyEntry, ...]:
    out = []
    for i, hp in enumerate(policies):
        here = f"{path}[{i}]"
        reject_unsupported(hp, HASH_POLICY_SPEC, here)
        kind = hp.WhichOneof("policy_specifier")
        if kind == "header":
            if not hp.header.header_name:
                raise ConfigError(f"{here}.header.header_name", "header_name must not be empty")
            out.append(HashPolicyEntry("header", hp.header.header_name.lower(), hp.terminal))
        elif kind == "cookie":
            out.append(HashPolicyEntry("cookie", hp.cookie.name, hp.terminal))
        elif kind == "connection_properties":
            if hp.connection_properties.source_ip:
                out.append(HashPolicyEntry("source_ip", "", hp.terminal))
        elif kind == "query_parameter":
            out.append(HashPolicyEntry("query_parameter", hp.query_parameter.name, hp.terminal))
        else:
            raise ConfigError(
                here, "hash_policy needs one of header, cookie, connection_properties, query_parameter"
            )
    return tuple(out)


def compute_hash(
    policies: tuple[HashPolicyEntry, ...], headers: Headers, remote_address: tuple[str, int] | None
) -> int | None:
    """Envoy's HashPolicyImpl::generateHash: combine each policy's hash (rotate-left-1 xor) in order,
    stopping after a terminal policy that produced a value; None when no policy produced a value."""
    result: int | None = None
    mask = (1 << 64) - 1
    for p in policies:
        v = p.value(headers, remote_address)
        if v is None:
            continue
        h = stable_hash(v)
        result = h if result is None else ((((result << 1) | (result >> 63)) & mask) ^ h)
        if p.terminal:
            break
    return result


# ---------------------------------------------------------------------------------------------
# Mirror policy

MIRROR_SPEC = {
    "cluster": True,
    "cluster_header": True,
    "runtime_fraction": {"default_value": True},
    "disable_shadow_host_suffix_append": True,
    "host_rewrite_literal": True,
}


@dataclass(frozen=True, slots=True)
class MirrorPolicy:
    cluster: str
    cluster_header: str
    fraction: Fraction
    append_shadow_suffix: bool
    host_rewrite: str

    def cluster_name(self, headers: Headers) -> str | None:
        if self.cluster:
            return self.cluster
        return headers.get(self.cluster_header) or None


def compile_mirrors(policies, path: str) -> tuple[MirrorPolicy, ...]:
    out = []
    for i, mp in enumerate(policies):
        here = f"{path}[{i}]"
        reject_unsupported(mp, MIRROR_SPEC, here)
        if bool(mp.cluster) == bool(mp.cluster_header):
            raise ConfigError(here, "exactly one of cluster and cluster_header must be set")
        fraction = (
            Fraction.from_proto(mp.runtime_fraction.default_value, f"{here}.runtime_fraction.default_value")
            if mp.HasField("runtime_fraction")
            else Fraction.always()
        )
        out.append(
            MirrorPolicy(
                mp.cluster,
                mp.cluster_header.lower(),
                fraction,
                not mp.disable_shadow_host_suffix_append,
                mp.host_rewrite_literal,
            )
        )
    return tuple(out)


def shadow_authority(authority: str) -> str:
    """Envoy appends ``-shadow`` to the host, before any port: ``foo:8080`` -> ``foo-shadow:8080``."""
    if authority.startswith("["):
        end = authority.find("]")
        if end > 0 and authority[end + 1 : end + 2] == ":":
            return authority[: end + 1] + "-shadow" + authority[end + 1 :]
        return authority + "-shadow"
    host, sep, port = authority.rpartition(":")
    if sep and port.isdigit() and host:
        return f"{host}-shadow:{port}"
    return authority + "-shadow"


# ---------------------------------------------------------------------------------------------
# Rewrites


def compile_regex_rewrite(msg, path: str) -> tuple[re.Pattern, str]:
    """A RegexMatchAndSubstitute as (pattern, Python replacement). RE2's ``\\N`` groups map to
    ``\\g<N>`` so that ``\\0`` means the whole match, as in RE2."""
    pattern = compile_regex(msg.pattern, f"{path}.pattern")
    repl = re.sub(r"\\(\d)", r"\\g<\1>", msg.substitution)
    try:
        pattern.sub(repl, "")
    except (re.error, IndexError) as e:
        raise ConfigError(f"{path}.substitution", f"invalid substitution '{msg.substitution}': {e}") from None
    return pattern, repl


def split_path(full_path: str) -> tuple[str, str]:
    """(path portion, '?query...' rest) of a :path."""
    q = full_path.find("?")
    if q < 0:
        return full_path, ""
    return full_path[:q], full_path[q:]


# ---------------------------------------------------------------------------------------------
# Weighted clusters

WEIGHTED_SPEC = {
    "clusters": {
        "name": True,
        "cluster_header": True,
        "weight": True,
        "request_headers_to_add": True,
        "request_headers_to_remove": True,
        "response_headers_to_add": True,
        "response_headers_to_remove": True,
        "host_rewrite_literal": True,
    },
    "total_weight": True,
}


@dataclass(frozen=True, slots=True)
class ClusterWeight:
    name: str
    cluster_header: str
    weight: int
    request_mutation: HeaderMutation | None
    response_mutation: HeaderMutation | None
    host_rewrite: str


def compile_weighted(msg, path: str) -> tuple[tuple[ClusterWeight, ...], int]:
    reject_unsupported(msg, WEIGHTED_SPEC, path)
    if not msg.clusters:
        raise ConfigError(f"{path}.clusters", "weighted_clusters needs at least one cluster")
    entries = []
    total = 0
    for i, cw in enumerate(msg.clusters):
        here = f"{path}.clusters[{i}]"
        if bool(cw.name) == bool(cw.cluster_header):
            raise ConfigError(here, "exactly one of name and cluster_header must be set")
        weight = cw.weight.value if cw.HasField("weight") else 0
        total += weight
        req = compile_mutation(
            cw.request_headers_to_add,
            cw.request_headers_to_remove,
            here,
            "request_headers_to_add",
            "request_headers_to_remove",
        )
        resp = compile_mutation(
            cw.response_headers_to_add,
            cw.response_headers_to_remove,
            here,
            "response_headers_to_add",
            "response_headers_to_remove",
        )
        entries.append(
            ClusterWeight(
                cw.name, cw.cluster_header.lower(), weight, req or None, resp or None, cw.host_rewrite_literal
            )
        )
    if msg.HasField("total_weight") and msg.total_weight.value != total:
        raise ConfigError(
            f"{path}.total_weight",
            f"sum of weights in weighted_clusters ({total}) must equal total_weight ({msg.total_weight.value})",
        )
    if total <= 0:
        raise ConfigError(f"{path}.clusters", "the sum of weighted_clusters weights must be greater than 0")
    return tuple(entries), total


# ---------------------------------------------------------------------------------------------
# The three route action kinds


@dataclass(frozen=True, slots=True)
class RouteAction:
    cluster: str = ""
    cluster_header: str = ""
    weighted_clusters: tuple[ClusterWeight, ...] = ()
    total_weight: int = 0
    cluster_not_found_code: int = 503
    prefix_rewrite: str | None = None
    regex_rewrite: tuple[re.Pattern, str] | None = None
    host_rewrite_literal: str = ""
    auto_host_rewrite: bool = False
    append_x_forwarded_host: bool = False
    timeout: float | None = DEFAULT_ROUTE_TIMEOUT  # None: no timeout
    idle_timeout: float | None = None  # None: not set here; 0: disabled
    retry_policy: RetryPolicy | None = None
    mirrors: tuple[MirrorPolicy, ...] = ()
    hash_policies: tuple[HashPolicyEntry, ...] = ()

    def pick_weighted(self, random_value: int) -> ClusterWeight:
        """Envoy's selection: random_value % total_weight falls in one cluster's [begin, end)."""
        selected = random_value % self.total_weight
        end = 0
        for cw in self.weighted_clusters:
            end += cw.weight
            if selected < end:
                return cw
        return self.weighted_clusters[-1]  # unreachable: total == sum of weights

    def select_cluster(self, headers: Headers, random_value: int) -> tuple[str, ClusterWeight | None]:
        """(cluster name, the weighted entry or None); the name is "" when a cluster_header is absent."""
        if self.cluster:
            return self.cluster, None
        if self.cluster_header:
            return headers.get(self.cluster_header) or "", None
        cw = self.pick_weighted(random_value)
        if cw.name:
            return cw.name, cw
        return headers.get(cw.cluster_header) or "", cw

    def hash_key(self, headers: Headers, remote_address: tuple[str, int] | None) -> int | None:
        if not self.hash_policies:
            return None
        return compute_hash(self.hash_policies, headers, remote_address)


REDIRECT_CODES = {0: 301, 1: 302, 2: 303, 3: 307, 4: 308}


@dataclass(frozen=True, slots=True)
class Redirect:
    scheme: str = ""  # "" keeps the request's scheme
    host: str = ""
    port: int = 0
    path: str | None = None
    prefix_rewrite: str | None = None
    regex_rewrite: tuple[re.Pattern, str] | None = None
    response_code: int = 301
    strip_query: bool = False

    def location(self, headers: Headers, matched_prefix_len: int) -> str:
        """The Location of the redirect (Envoy's RouteEntryImplBase::newUri)."""
        scheme = self.scheme or headers.get("x-forwarded-proto") or headers.get(":scheme") or "http"
        final_port = f":{self.port}" if self.port else ""
        if self.host:
            host = self.host
            if final_port:
                host = _strip_port(host)
        else:
            host = headers.get(":authority") or ""
            bare = _strip_port(host)
            if bare != host:  # the request named a port
                port = host[len(bare) :]
                if (
                    final_port
                    or (scheme == "https" and port == ":80")
                    or (scheme == "http" and port == ":443")
                ):
                    host = bare
        full = headers.get(":path") or "/"
        path, query = split_path(full)
        if self.path is not None:
            if "?" in self.path:
                new_full = self.path
            else:
                new_full = self.path + ("" if self.strip_query else query)
        else:
            if self.prefix_rewrite is not None:
                path = self.prefix_rewrite + path[matched_prefix_len:]
            elif self.regex_rewrite is not None:
                pattern, repl = self.regex_rewrite
                path = pattern.sub(repl, path)
            new_full = path + ("" if self.strip_query else query)
        return f"{scheme}://{host}{final_port}{new_full}"


def _strip_port(host: str) -> str:
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end > 0 else host
    h, sep, port = host.rpartition(":")
    return h if sep and port.isdigit() else host


REDIRECT_SPEC = {
    "https_redirect": True,
    "scheme_redirect": True,
    "host_redirect": True,
    "port_redirect": True,
    "path_redirect": True,
    "prefix_rewrite": True,
    "regex_rewrite": True,
    "response_code": True,
    "strip_query": True,
}


def compile_redirect(msg, path: str) -> Redirect:
    reject_unsupported(msg, REDIRECT_SPEC, path)
    scheme = "https" if msg.https_redirect else msg.scheme_redirect.lower()
    code = REDIRECT_CODES.get(msg.response_code)
    if code is None:
        raise ConfigError(f"{path}.response_code", f"unknown redirect response code {msg.response_code}")
    kind = msg.WhichOneof("path_rewrite_specifier")
    return Redirect(
        scheme=scheme,
        host=msg.host_redirect,
        port=msg.port_redirect,
        path=msg.path_redirect if kind == "path_redirect" else None,
        prefix_rewrite=msg.prefix_rewrite if kind == "prefix_rewrite" else None,
        regex_rewrite=compile_regex_rewrite(msg.regex_rewrite, f"{path}.regex_rewrite")
        if kind == "regex_rewrite"
        else None,
        response_code=code,
        strip_query=msg.strip_query,
    )


@dataclass(frozen=True, slots=True)
class DirectResponse:
    status: int
    body: bytes


def compile_direct_response(msg, path: str, max_body: int) -> DirectResponse:
    reject_unsupported(
        msg, {"status": True, "body": {"inline_string": True, "inline_bytes": True, "filename": True}}, path
    )
    if not 200 <= msg.status < 600 and not 100 <= msg.status < 200:
        raise ConfigError(f"{path}.status", f"status {msg.status} is not a valid HTTP status (100..599)")
    body = b""
    if msg.HasField("body"):
        kind = msg.body.WhichOneof("specifier")
        if kind == "inline_string":
            body = msg.body.inline_string.encode()
        elif kind == "inline_bytes":
            body = bytes(msg.body.inline_bytes)
        elif kind == "filename":
            try:
                with open(msg.body.filename, "rb") as f:
                    body = f.read()
            except OSError as e:
                raise ConfigError(
                    f"{path}.body.filename", f"cannot read '{msg.body.filename}': {e}"
                ) from None
    if len(body) > max_body:
        raise ConfigError(f"{path}.body", f"response body size is {len(body)} bytes; maximum is {max_body}")
    return DirectResponse(msg.status, body)
