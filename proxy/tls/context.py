"""TLS contexts from Envoy's ``DownstreamTlsContext`` / ``UpstreamTlsContext`` (pure-ish).

Two steps, so that a certificate rotation only redoes the second:

1. ``compile_downstream`` / ``compile_upstream`` check the proto (every unsupported field is a
   ConfigError naming its path) and return a ``TlsConfig``: static materials, the names of the SDS
   secrets it needs, SAN matchers, ALPN, protocol versions.
2. ``build_context(config, secrets)`` turns a ``TlsConfig`` plus the current SDS secrets into a
   ``BuiltContext`` (a fresh ``ssl.SSLContext`` and what we know about our own certificate). Each
   secret update builds a new one; connections keep the one they started with.

Python's ``ssl`` cannot match subject alternative names itself, so ``SanMatchers.verify`` runs on the
peer certificate after the handshake (Envoy's ``ssl.fail_verify_san`` when it fails).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import ssl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field

from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2

from proxy.config.errors import ConfigError
from proxy.config.supported import reject_unsupported
from proxy.router.matchers import compile_string_matcher
from proxy.tls.der import pem_certificates_der, subject_alt_names

DATA_SOURCE_SPEC = {"filename": True, "inline_bytes": True, "inline_string": True}
SDS_SECRET_SPEC = {"name": True, "sds_config": True}  # sds_config is checked by proxy.tls.secrets
TLS_CERTIFICATE_SPEC = {"certificate_chain": DATA_SOURCE_SPEC, "private_key": DATA_SOURCE_SPEC}
VALIDATION_SPEC = {
    "trusted_ca": DATA_SOURCE_SPEC,
    "match_typed_subject_alt_names": {"san_type": True, "matcher": True},
    "match_subject_alt_names": True,
}
COMMON_SPEC = {
    "tls_params": {
        "tls_minimum_protocol_version": True,
        "tls_maximum_protocol_version": True,
        "cipher_suites": True,
    },
    "tls_certificates": TLS_CERTIFICATE_SPEC,
    "tls_certificate_sds_secret_configs": SDS_SECRET_SPEC,
    "validation_context": VALIDATION_SPEC,
    "validation_context_sds_secret_config": SDS_SECRET_SPEC,
    "combined_validation_context": {
        "default_validation_context": VALIDATION_SPEC,
        "validation_context_sds_secret_config": SDS_SECRET_SPEC,
    },
    "alpn_protocols": True,
}
DOWNSTREAM_SPEC = {"common_tls_context": COMMON_SPEC, "require_client_certificate": True}
UPSTREAM_SPEC = {"common_tls_context": COMMON_SPEC, "sni": True}
SECRET_SPEC = {"name": True, "tls_certificate": TLS_CERTIFICATE_SPEC, "validation_context": VALIDATION_SPEC}

_PROTOCOLS = {
    common_pb2.TlsParameters.TLSv1_2: ssl.TLSVersion.TLSv1_2,
    common_pb2.TlsParameters.TLSv1_3: ssl.TLSVersion.TLSv1_3,
}
_PROTOCOL_NAMES = {ssl.TLSVersion.TLSv1_2: "TLSv1_2", ssl.TLSVersion.TLSv1_3: "TLSv1_3"}

SAN_TYPES = common_pb2.SubjectAltNameMatcher.SanType


# --------------------------------------------------------------------------------------------------
# Materials and SAN matching
# --------------------------------------------------------------------------------------------------


def read_data_source(ds, path: str) -> bytes:
    """An ``envoy.config.core.v3.DataSource``: ``filename``, ``inline_bytes`` or ``inline_string``."""
    kind = ds.WhichOneof("specifier")
    if kind == "filename":
        try:
            with open(ds.filename, "rb") as f:
                return f.read()
        except OSError as e:
            raise ConfigError(f"{path}.filename", f"cannot read '{ds.filename}': {e.strerror or e}") from None
    if kind == "inline_bytes":
        return ds.inline_bytes
    if kind == "inline_string":
        return ds.inline_string.encode()
    raise ConfigError(path, "a data source needs filename, inline_bytes or inline_string")


@dataclass(frozen=True)
class CertificatePair:
    chain_pem: bytes
    key_pem: bytes


@dataclass(frozen=True)
class PeerSans:
    uri: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()
    email: tuple[str, ...] = ()
    ip: tuple[str, ...] = ()

    def of_type(self, san_type: int) -> tuple[str, ...]:
        if san_type == SAN_TYPES.URI:
            return self.uri
        if san_type == SAN_TYPES.DNS:
            return self.dns
        if san_type == SAN_TYPES.EMAIL:
            return self.email
        if san_type == SAN_TYPES.IP_ADDRESS:
            return self.ip
        return ()

    @property
    def all(self) -> tuple[str, ...]:
        return self.uri + self.dns + self.email + self.ip


def sans_of(der: bytes) -> PeerSans:
    """The subject alternative names of a DER certificate (ValueError when it does not parse)."""
    return PeerSans(**subject_alt_names(der))


@dataclass(frozen=True)
class SanMatchers:
    """Envoy's SAN check: the peer passes when there is no matcher, or when any matcher matches
    any SAN of its type (the deprecated untyped matchers look at every SAN)."""

    typed: tuple[tuple[int, Callable[[str], bool]], ...] = ()
    untyped: tuple[Callable[[str], bool], ...] = ()
    described: tuple[str, ...] = ()  # for error messages and logs

    def __bool__(self) -> bool:
        return bool(self.typed or self.untyped)

    def verify(self, sans: PeerSans) -> bool:
        if not self:
            return True
        for san_type, pred in self.typed:
            if any(pred(v) for v in sans.of_type(san_type)):
                return True
        return any(pred(v) for pred in self.untyped for v in sans.all)


def compile_san_matchers(vc: common_pb2.CertificateValidationContext, path: str) -> SanMatchers:
    typed, untyped, described = [], [], []
    for i, m in enumerate(vc.match_typed_subject_alt_names):
        here = f"{path}.match_typed_subject_alt_names[{i}]"
        if m.san_type in (SAN_TYPES.SAN_TYPE_UNSPECIFIED, SAN_TYPES.OTHER_NAME):
            raise ConfigError(
                f"{here}.san_type",
                f"san_type {SAN_TYPES.Name(m.san_type)} is not supported (use URI, DNS, EMAIL or IP_ADDRESS)",
            )
        if not m.HasField("matcher"):
            raise ConfigError(f"{here}.matcher", "a SAN matcher needs a string matcher")
        typed.append((m.san_type, compile_string_matcher(m.matcher, f"{here}.matcher")))
        described.append(f"{SAN_TYPES.Name(m.san_type)}:{_describe(m.matcher)}")
    for i, m in enumerate(vc.match_subject_alt_names):
        untyped.append(compile_string_matcher(m, f"{path}.match_subject_alt_names[{i}]"))
        described.append(_describe(m))
    return SanMatchers(tuple(typed), tuple(untyped), tuple(described))


def _describe(matcher) -> str:
    kind = matcher.WhichOneof("match_pattern")
    value = matcher.safe_regex.regex if kind == "safe_regex" else getattr(matcher, kind or "exact", "")
    return f"{kind}={value}"


# --------------------------------------------------------------------------------------------------
# Compiled config
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsConfig:
    server_side: bool
    certificates: tuple[CertificatePair, ...] = ()
    certificate_sds: tuple[secret_pb2.SdsSecretConfig, ...] = ()
    trusted_ca: bytes | None = None  # static trust bundle (PEM)
    validation_sds: secret_pb2.SdsSecretConfig | None = None
    validates_peer: bool = False  # a validation context (static or SDS) is configured
    san_matchers: SanMatchers = field(default_factory=SanMatchers)
    alpn: tuple[str, ...] = ()
    min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    max_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3
    ciphers: str = ""
    require_client_certificate: bool = False
    sni: str = ""

    @property
    def sds_names(self) -> tuple[str, ...]:
        names = [s.name for s in self.certificate_sds]
        if self.validation_sds is not None:
            names.append(self.validation_sds.name)
        return tuple(names)


def _protocol(value: int, default: ssl.TLSVersion, path: str) -> ssl.TLSVersion:
    if value == common_pb2.TlsParameters.TLS_AUTO:
        return default
    if value not in _PROTOCOLS:
        raise ConfigError(
            path,
            f"{common_pb2.TlsParameters.TlsProtocol.Name(value)} is not allowed: Isthmus speaks TLSv1_2 or newer",
        )
    return _PROTOCOLS[value]


def _check_sds(sds: secret_pb2.SdsSecretConfig, path: str) -> secret_pb2.SdsSecretConfig:
    if not sds.name:
        raise ConfigError(f"{path}.name", "an SDS secret config needs a name")
    return sds


def load_certificate(tc: common_pb2.TlsCertificate, path: str) -> CertificatePair:
    if not tc.HasField("certificate_chain") or not tc.HasField("private_key"):
        missing = "certificate_chain" if not tc.HasField("certificate_chain") else "private_key"
        raise ConfigError(f"{path}.{missing}", "a TLS certificate needs certificate_chain and private_key")
    return CertificatePair(
        read_data_source(tc.certificate_chain, f"{path}.certificate_chain"),
        read_data_source(tc.private_key, f"{path}.private_key"),
    )


def _compile_common(common: tls_pb2.CommonTlsContext, server_side: bool, path: str) -> dict:
    out: dict = {}
    params = common.tls_params
    ppath = f"{path}.tls_params"
    out["min_version"] = _protocol(
        params.tls_minimum_protocol_version, ssl.TLSVersion.TLSv1_2, f"{ppath}.tls_minimum_protocol_version"
    )
    out["max_version"] = _protocol(
        params.tls_maximum_protocol_version, ssl.TLSVersion.TLSv1_3, f"{ppath}.tls_maximum_protocol_version"
    )
    if out["max_version"] < out["min_version"]:
        raise ConfigError(
            f"{ppath}.tls_maximum_protocol_version",
            f"maximum {_PROTOCOL_NAMES[out['max_version']]} is below minimum {_PROTOCOL_NAMES[out['min_version']]}",
        )
    for i, suite in enumerate(params.cipher_suites):
        if suite.startswith("[") or "|" in suite:
            raise ConfigError(
                f"{ppath}.cipher_suites[{i}]", "cipher equivalence groups are not supported by Isthmus"
            )
        probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            probe.set_ciphers(suite)
        except ssl.SSLError:
            raise ConfigError(f"{ppath}.cipher_suites[{i}]", f"unknown cipher suite '{suite}'") from None
    out["ciphers"] = ":".join(params.cipher_suites)

    if common.tls_certificates and common.tls_certificate_sds_secret_configs:
        raise ConfigError(
            f"{path}.tls_certificate_sds_secret_configs",
            "set either tls_certificates or tls_certificate_sds_secret_configs, not both",
        )
    certs = [
        load_certificate(tc, f"{path}.tls_certificates[{i}]") for i, tc in enumerate(common.tls_certificates)
    ]
    if len(certs) > 1:
        raise ConfigError(
            f"{path}.tls_certificates[1]", "only one TLS certificate is supported by Isthmus yet"
        )
    sds = [
        _check_sds(s, f"{path}.tls_certificate_sds_secret_configs[{i}]")
        for i, s in enumerate(common.tls_certificate_sds_secret_configs)
    ]
    if len(sds) > 1:
        raise ConfigError(
            f"{path}.tls_certificate_sds_secret_configs[1]",
            "only one certificate secret is supported by Isthmus yet",
        )
    out["certificates"], out["certificate_sds"] = tuple(certs), tuple(sds)

    kind = common.WhichOneof("validation_context_type")
    vc, out["validation_sds"], out["trusted_ca"], vpath = None, None, None, path
    if kind == "validation_context":
        vc, vpath = common.validation_context, f"{path}.validation_context"
    elif kind == "validation_context_sds_secret_config":
        out["validation_sds"] = _check_sds(
            common.validation_context_sds_secret_config, f"{path}.validation_context_sds_secret_config"
        )
    elif kind == "combined_validation_context":
        cpath = f"{path}.combined_validation_context"
        combined = common.combined_validation_context
        if not combined.HasField("validation_context_sds_secret_config"):
            raise ConfigError(
                f"{cpath}.validation_context_sds_secret_config",
                "a combined validation context needs an SDS secret",
            )
        out["validation_sds"] = _check_sds(
            combined.validation_context_sds_secret_config, f"{cpath}.validation_context_sds_secret_config"
        )
        vc, vpath = combined.default_validation_context, f"{cpath}.default_validation_context"
    out["validates_peer"] = kind is not None
    out["san_matchers"] = SanMatchers()
    if vc is not None:
        out["san_matchers"] = compile_san_matchers(vc, vpath)
        if vc.HasField("trusted_ca"):
            out["trusted_ca"] = read_data_source(vc.trusted_ca, f"{vpath}.trusted_ca")
        elif kind == "validation_context" and out["san_matchers"]:
            raise ConfigError(f"{vpath}.trusted_ca", "SAN matchers need a trusted_ca to verify the peer with")
    for i, proto in enumerate(common.alpn_protocols):
        if not proto or len(proto.encode()) > 255:
            raise ConfigError(f"{path}.alpn_protocols[{i}]", "an ALPN protocol is 1 to 255 bytes long")
    out["alpn"] = tuple(common.alpn_protocols)
    return out


def compile_downstream(msg: tls_pb2.DownstreamTlsContext, path: str) -> TlsConfig:
    reject_unsupported(msg, DOWNSTREAM_SPEC, path)
    common = _compile_common(msg.common_tls_context, True, f"{path}.common_tls_context")
    if not common["certificates"] and not common["certificate_sds"]:
        raise ConfigError(
            f"{path}.common_tls_context",
            "a server TLS context needs a certificate (tls_certificates or tls_certificate_sds_secret_configs)",
        )
    require = msg.require_client_certificate.value if msg.HasField("require_client_certificate") else False
    if require and not common["validates_peer"]:
        raise ConfigError(
            f"{path}.require_client_certificate",
            "requiring a client certificate needs a validation context to check it against",
        )
    return TlsConfig(server_side=True, require_client_certificate=require, **common)


def compile_upstream(msg: tls_pb2.UpstreamTlsContext, path: str) -> TlsConfig:
    reject_unsupported(msg, UPSTREAM_SPEC, path)
    common = _compile_common(msg.common_tls_context, False, f"{path}.common_tls_context")
    if msg.sni and len(msg.sni) > 255:
        raise ConfigError(f"{path}.sni", "SNI is at most 255 characters")
    return TlsConfig(server_side=False, sni=msg.sni, **common)


# --------------------------------------------------------------------------------------------------
# Secrets
# --------------------------------------------------------------------------------------------------


def check_secret(secret: secret_pb2.Secret, path: str) -> None:
    """A Secret we can use: a tls_certificate or a validation_context, nothing we would ignore."""
    reject_unsupported(secret, SECRET_SPEC, path)
    if not secret.name:
        raise ConfigError(f"{path}.name", "a secret needs a name")
    kind = secret.WhichOneof("type")
    if kind is None:
        raise ConfigError(path, f"secret '{secret.name}' has neither tls_certificate nor validation_context")
    if kind == "tls_certificate":
        load_certificate(secret.tls_certificate, f"{path}.tls_certificate")
    else:
        if not secret.validation_context.HasField("trusted_ca"):
            raise ConfigError(f"{path}.validation_context.trusted_ca", "a validation secret needs trusted_ca")
        compile_san_matchers(secret.validation_context, f"{path}.validation_context")


# --------------------------------------------------------------------------------------------------
# Building ssl.SSLContext objects
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuiltContext:
    """One immutable generation of a TLS context: what new connections use until the next update."""

    ssl_context: ssl.SSLContext
    config: TlsConfig
    san_matchers: SanMatchers
    local_certificate_der: bytes | None
    local_sans: PeerSans
    generation: int = 0
    # Client side: SNI -> the newest resumable ssl.SSLSession (proxy.tls.transport.TlsSession).
    session_cache: dict = field(default_factory=dict, compare=False, repr=False)
    # Peer certificate DER -> what connections derive from it (proxy.tls.transport.PeerFacts):
    # a mesh has few peers, each seen on many connections.
    peer_facts: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def local_uri_sans(self) -> tuple[str, ...]:
        return self.local_sans.uri


class NotReady(Exception):
    """An SDS secret the context needs has not arrived yet."""


def _load_cert_chain(ctx: ssl.SSLContext, pair: CertificatePair, path: str) -> None:
    # ssl can only load a key from a file: write it to a private (0600) temp file and remove it at once.
    fd, name = tempfile.mkstemp(prefix="isthmus-tls-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(pair.chain_pem.rstrip(b"\n") + b"\n" + pair.key_pem)
        ctx.load_cert_chain(name)
    except ssl.SSLError as e:
        raise ConfigError(path, f"certificate chain and private key do not load: {e.reason or e}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


def build_context(
    config: TlsConfig,
    secrets: dict[str, secret_pb2.Secret] | None = None,
    generation: int = 0,
    path: str = "",
) -> BuiltContext:
    """A fresh SSLContext from the config and the current SDS secrets (NotReady when one is missing;
    ConfigError when a secret's contents are unusable)."""
    secrets = secrets or {}
    proto = ssl.PROTOCOL_TLS_SERVER if config.server_side else ssl.PROTOCOL_TLS_CLIENT
    ctx = ssl.SSLContext(proto)
    ctx.check_hostname = False  # Envoy checks SANs only through the configured matchers
    ctx.minimum_version = config.min_version
    ctx.maximum_version = config.max_version
    if config.ciphers:
        ctx.set_ciphers(config.ciphers)
    if config.alpn:
        ctx.set_alpn_protocols(list(config.alpn))

    pair: CertificatePair | None = config.certificates[0] if config.certificates else None
    for sds in config.certificate_sds:
        secret = secrets.get(sds.name)
        if secret is None:
            raise NotReady(f"certificate secret '{sds.name}' has not arrived")
        if secret.WhichOneof("type") != "tls_certificate":
            raise ConfigError(f"{path}secret '{sds.name}'", "expected a tls_certificate secret")
        pair = load_certificate(secret.tls_certificate, f"{path}secret '{sds.name}'.tls_certificate")
    local_der, local_sans = None, PeerSans()
    if pair is not None:
        _load_cert_chain(ctx, pair, f"{path}certificate")
        try:
            local_der = pem_certificates_der(pair.chain_pem)[0]
            local_sans = sans_of(local_der)
        except ValueError as e:
            raise ConfigError(f"{path}certificate", f"certificate chain is not PEM: {e}") from None

    trusted = config.trusted_ca
    san_matchers = config.san_matchers
    if config.validation_sds is not None:
        secret = secrets.get(config.validation_sds.name)
        if secret is None:
            raise NotReady(f"validation secret '{config.validation_sds.name}' has not arrived")
        if secret.WhichOneof("type") != "validation_context":
            raise ConfigError(
                f"{path}secret '{config.validation_sds.name}'", "expected a validation_context secret"
            )
        vc = secret.validation_context
        trusted = read_data_source(vc.trusted_ca, f"{path}secret '{secret.name}'.trusted_ca")
        extra = compile_san_matchers(vc, f"{path}secret '{secret.name}'")
        if extra:  # Envoy merges the secret's matchers into the default validation context's
            san_matchers = SanMatchers(
                san_matchers.typed + extra.typed,
                san_matchers.untyped + extra.untyped,
                san_matchers.described + extra.described,
            )
    if trusted is not None:
        try:
            ctx.load_verify_locations(cadata=trusted.decode("ascii", "replace"))
        except (ssl.SSLError, ValueError) as e:
            raise ConfigError(f"{path}trusted_ca", f"trusted CA is not valid PEM: {e}") from None
        if config.server_side:
            ctx.verify_mode = ssl.CERT_REQUIRED if config.require_client_certificate else ssl.CERT_OPTIONAL
        else:
            ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return BuiltContext(ctx, config, san_matchers, local_der, local_sans, generation)


def sha256_hex(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()
