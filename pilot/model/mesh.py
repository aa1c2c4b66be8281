"""Istio's MeshConfig, the subset Isthmus reads (pure): YAML as in Istio's ``mesh`` ConfigMap in, an
immutable ``MeshConfig`` out.

Read fields::

    trustDomain: cluster.local
    rootNamespace: istio-system
    outboundTrafficPolicy: {mode: ALLOW_ANY | REGISTRY_ONLY}
    extensionProviders:
    - name: mixer                            # AuthorizationPolicy CUSTOM provider.name
      envoyExtAuthzGrpc: {service: mixer.istio-system.svc.cluster.local, port: 9091,
                          timeout: 0.2s, failOpen: false, statusOnError: "403", clearRouteCache: false}
    - name: mixer-telemetry                  # access logs of HTTP requests
      envoyHttpAls: {service: mixer.istio-system.svc.cluster.local, port: 9091, logName: http_envoy_accesslog}
    - name: mixer-tcp-telemetry              # access logs of TCP connections
      envoyTcpAls: {service: mixer.istio-system.svc.cluster.local, port: 9091, logName: tcp_envoy_accesslog}
    defaultProviders: {accessLogging: [mixer-telemetry, mixer-tcp-telemetry]}

A provider's ``service`` is ``[<namespace>/]<hostname>``, resolved as Istio does through the service
registry; a host that is not in the registry is reached through the address given for it in
``service_addresses`` (``--mixer-address``), or the host itself (an IP, or a DNS name). Unknown fields
are returned as warnings (named by path); a bad value of a known field is a ``MeshConfigError``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import yaml

EXT_AUTHZ_GRPC = "envoyExtAuthzGrpc"
HTTP_ALS = "envoyHttpAls"
TCP_ALS = "envoyTcpAls"
PROVIDER_KINDS = (EXT_AUTHZ_GRPC, HTTP_ALS, TCP_ALS)
MIXER_HOST = "mixer.istio-system.svc.cluster.local"
DEFAULT_MIXER_PORT = 9091

_PROVIDER_FIELDS = {
    EXT_AUTHZ_GRPC: {"service", "port", "timeout", "failOpen", "statusOnError", "clearRouteCache"},
    HTTP_ALS: {"service", "port", "logName"},
    TCP_ALS: {"service", "port", "logName"},
}
# Istio fields we know but do not implement: reported, not silently dropped.
_PROVIDER_UNSUPPORTED = {
    EXT_AUTHZ_GRPC: {"includeRequestBodyInCheck", "pathPrefix", "headersToUpstreamOnAllow"},
    HTTP_ALS: {
        "filterStateObjectsToLog",
        "additionalRequestHeadersToLog",
        "additionalResponseHeadersToLog",
        "additionalRequestTrailersToLog",
        "additionalResponseTrailersToLog",
    },
    TCP_ALS: {"filterStateObjectsToLog"},
}
_TOP_FIELDS = {
    "trustDomain",
    "rootNamespace",
    "outboundTrafficPolicy",
    "extensionProviders",
    "defaultProviders",
}


class MeshConfigError(ValueError):
    pass


@dataclass(frozen=True)
class ExtensionProvider:
    name: str
    kind: str  # one of PROVIDER_KINDS
    service: str  # hostname (namespace prefix removed)
    port: int
    timeout: str | None = None  # "0.2s" (ext_authz)
    fail_open: bool = False
    status_on_error: int | None = None
    clear_route_cache: bool = False
    log_name: str = ""


@dataclass(frozen=True)
class MeshConfig:
    domain: str = "cluster.local"  # --domain
    root_namespace: str = "istio-system"  # --root-namespace
    trust_domain: str = "cluster.local"
    outbound_traffic_policy: str = "ALLOW_ANY"  # or REGISTRY_ONLY
    extension_providers: tuple[ExtensionProvider, ...] = ()
    default_access_logging: tuple[str, ...] = ()  # defaultProviders.accessLogging (provider names)
    service_addresses: tuple[tuple[str, str], ...] = ()  # (host, ip) for providers outside the registry
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def provider(self, name: str) -> ExtensionProvider | None:
        for p in self.extension_providers:
            if p.name == name:
                return p
        return None

    def access_log_providers(self) -> list[ExtensionProvider]:
        return [p for n in self.default_access_logging if (p := self.provider(n)) is not None]

    def address_of(self, host: str) -> str | None:
        return dict(self.service_addresses).get(host)


def _duration(value: Any, path: str) -> str:
    s = str(value).strip()
    try:
        if s.endswith("ms"):
            secs = float(s[:-2]) / 1000
        elif s.endswith("s"):
            secs = float(s[:-1])
        else:
            raise ValueError
    except ValueError:
        raise MeshConfigError(f"{path}: {value!r} is not a duration (e.g. 0.2s, 200ms)") from None
    if secs <= 0:
        raise MeshConfigError(f"{path}: must be greater than 0")
    return f"{secs:g}s"


def _port(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise MeshConfigError(f"{path}: {value!r} is not a port (1-65535)")
    return value


def _provider(i: int, raw: Any, warnings: list[str]) -> ExtensionProvider:
    path = f"extensionProviders[{i}]"
    if not isinstance(raw, dict) or not raw.get("name"):
        raise MeshConfigError(f"{path}.name: a provider needs a name")
    kinds = [k for k in raw if k != "name"]
    known = [k for k in kinds if k in PROVIDER_KINDS]
    for k in kinds:
        if k not in PROVIDER_KINDS:
            warnings.append(
                f"{path}.{k}: provider type not supported by Isthmus (supported: "
                f"{', '.join(PROVIDER_KINDS)}); ignored"
            )
    if len(known) != 1:
        if not known and kinds:
            raise MeshConfigError(f"{path}: provider {raw['name']!r} has no supported type")
        raise MeshConfigError(f"{path}: exactly one provider type is needed, got {kinds or 'none'}")
    kind = known[0]
    body = raw[kind] or {}
    bpath = f"{path}.{kind}"
    if not isinstance(body, dict):
        raise MeshConfigError(f"{bpath}: must be a mapping")
    for k in body:
        if k in _PROVIDER_UNSUPPORTED[kind]:
            warnings.append(f"{bpath}.{k}: not supported by Isthmus yet; ignored")
        elif k not in _PROVIDER_FIELDS[kind]:
            warnings.append(f"{bpath}.{k}: unknown field; ignored")
    service = str(body.get("service") or "")
    if not service:
        raise MeshConfigError(f"{bpath}.service: required")
    if "/" in service:
        service = service.split("/", 1)[1]
    if "port" not in body:
        raise MeshConfigError(f"{bpath}.port: required")
    p = ExtensionProvider(
        name=str(raw["name"]), kind=kind, service=service, port=_port(body["port"], f"{bpath}.port")
    )
    if kind == EXT_AUTHZ_GRPC:
        status = body.get("statusOnError")
        if status is not None:
            try:
                status = int(status)
            except (TypeError, ValueError):
                raise MeshConfigError(f"{bpath}.statusOnError: {status!r} is not an HTTP status") from None
            if not 200 <= status <= 599:
                raise MeshConfigError(f"{bpath}.statusOnError: {status} is not an HTTP status")
        for flag in ("failOpen", "clearRouteCache"):
            if flag in body and not isinstance(body[flag], bool):
                raise MeshConfigError(f"{bpath}.{flag}: must be true or false")
        p = replace(
            p,
            timeout=_duration(body["timeout"], f"{bpath}.timeout")
            if body.get("timeout") is not None
            else None,
            fail_open=bool(body.get("failOpen", False)),
            status_on_error=status,
            clear_route_cache=bool(body.get("clearRouteCache", False)),
        )
    else:
        default = "http_envoy_accesslog" if kind == HTTP_ALS else "tcp_envoy_accesslog"
        p = replace(p, log_name=str(body.get("logName") or default))
    return p


def parse_mesh_config(data: Any, base: MeshConfig | None = None) -> MeshConfig:
    """A MeshConfig document (already YAML-decoded) over ``base``; warnings in ``.warnings``."""
    base = base or MeshConfig()
    if data is None:
        return base
    if not isinstance(data, dict):
        raise MeshConfigError("mesh config: must be a mapping")
    warnings: list[str] = [f"{k}: not supported by Isthmus; ignored" for k in data if k not in _TOP_FIELDS]
    mesh = base
    if "trustDomain" in data:
        mesh = replace(mesh, trust_domain=str(data["trustDomain"]))
    if "rootNamespace" in data:
        mesh = replace(mesh, root_namespace=str(data["rootNamespace"]))
    otp = data.get("outboundTrafficPolicy")
    if otp is not None:
        mode = str((otp or {}).get("mode", "ALLOW_ANY")) if isinstance(otp, dict) else None
        if mode not in ("ALLOW_ANY", "REGISTRY_ONLY"):
            raise MeshConfigError("outboundTrafficPolicy.mode: must be ALLOW_ANY or REGISTRY_ONLY")
        mesh = replace(mesh, outbound_traffic_policy=mode)
    raw_providers = data.get("extensionProviders")
    if raw_providers is not None:
        if not isinstance(raw_providers, list):
            raise MeshConfigError("extensionProviders: must be a list")
        providers = [_provider(i, raw, warnings) for i, raw in enumerate(raw_providers)]
        names = [p.name for p in providers]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise MeshConfigError(f"extensionProviders: duplicate provider name(s) {sorted(dup)}")
        mesh = replace(mesh, extension_providers=tuple(providers))
    defaults = data.get("defaultProviders")
    if defaults is not None:
        if not isinstance(defaults, dict):
            raise MeshConfigError("defaultProviders: must be a mapping")
        for k in defaults:
            if k != "accessLogging":
                warnings.append(f"defaultProviders.{k}: not supported by Isthmus yet; ignored")
        logging = defaults.get("accessLogging") or []
        for j, n in enumerate(logging):
            p = mesh.provider(str(n))
            if p is None:
                raise MeshConfigError(
                    f"defaultProviders.accessLogging[{j}]: no extension provider named {n!r}"
                )
            if p.kind not in (HTTP_ALS, TCP_ALS):
                raise MeshConfigError(
                    f"defaultProviders.accessLogging[{j}]: provider {n!r} is {p.kind}, not an access log provider"
                )
        mesh = replace(mesh, default_access_logging=tuple(str(n) for n in logging))
    return replace(mesh, warnings=tuple(warnings))


def load_mesh_config(path: str, base: MeshConfig | None = None) -> MeshConfig:
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise MeshConfigError(f"{path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise MeshConfigError(f"{path}: not YAML: {e}") from None
    try:
        mesh = parse_mesh_config(data, base)
    except MeshConfigError as e:
        raise MeshConfigError(f"{path}: {e}") from None
    return replace(mesh, warnings=tuple(f"{path}: {w}" for w in mesh.warnings))


def with_mixer(
    mesh: MeshConfig, address: str, port: int = DEFAULT_MIXER_PORT, *, fail_open: bool = False
) -> MeshConfig:
    """The local mesh's default (``--mixer-address``): mixer as the ``mixer`` CUSTOM authorization
    provider and the default access-log providers, at ``address``. Providers of a mesh config file
    with the same names win."""
    own = {p.name for p in mesh.extension_providers}
    add = [
        ExtensionProvider("mixer", EXT_AUTHZ_GRPC, MIXER_HOST, port, timeout="0.2s", fail_open=fail_open),
        ExtensionProvider("mixer-telemetry", HTTP_ALS, MIXER_HOST, port, log_name="http_envoy_accesslog"),
        ExtensionProvider("mixer-tcp-telemetry", TCP_ALS, MIXER_HOST, port, log_name="tcp_envoy_accesslog"),
    ]
    providers = (*mesh.extension_providers, *(p for p in add if p.name not in own))
    logging = mesh.default_access_logging or ("mixer-telemetry", "mixer-tcp-telemetry")
    addresses = (*((h, a) for h, a in mesh.service_addresses if h != MIXER_HOST), (MIXER_HOST, address))
    return replace(
        mesh, extension_providers=providers, default_access_logging=logging, service_addresses=addresses
    )
