"""What the admin server shows of TLS: Envoy's ``SecretsConfigDump`` and ``/certs`` (pure builders).

Private keys never leave the proxy: as Envoy does, a dumped secret's ``private_key`` becomes
``inline_string: "[redacted]"``.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING

from envoy.admin.v3 import certs_pb2, config_dump_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from google.protobuf import timestamp_pb2

from proxy.tls.context import sans_of

if TYPE_CHECKING:
    from cryptography import x509

REDACTED = "[redacted]"


def _timestamp(t: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(t * 1e9))
    return ts


def redact(secret: secret_pb2.Secret) -> secret_pb2.Secret:
    out = secret_pb2.Secret()
    out.CopyFrom(secret)
    if out.HasField("tls_certificate") and out.tls_certificate.HasField("private_key"):
        out.tls_certificate.private_key.Clear()
        out.tls_certificate.private_key.inline_string = REDACTED
    return out


def secrets_config_dump(manager) -> config_dump_pb2.SecretsConfigDump:
    """Static secrets (bootstrap) and the SDS secrets in use, each with its version and update time."""
    dump = config_dump_pb2.SecretsConfigDump()
    if manager is None:
        return dump
    for name in sorted(manager.static_names):
        entry = dump.static_secrets.add(name=name, last_updated=_timestamp(manager.created))
        entry.secret.Pack(redact(manager.secrets[name]))
    for name in sorted(manager.dynamic_info):
        version, updated = manager.dynamic_info[name]
        entry = dump.dynamic_active_secrets.add(
            name=name, version_info=version, last_updated=_timestamp(updated)
        )
        entry.secret.Pack(redact(manager.secrets[name]))
    return dump


def _details(cert: x509.Certificate, now: datetime.datetime, path: str) -> certs_pb2.CertificateDetails:
    d = certs_pb2.CertificateDetails(path=path, serial_number=format(cert.serial_number, "x"))
    from cryptography.hazmat.primitives.serialization import Encoding

    sans = sans_of(cert.public_bytes(Encoding.DER))
    for uri in sans.uri:
        d.subject_alt_names.add(uri=uri)
    for dns in sans.dns:
        d.subject_alt_names.add(dns=dns)
    for ip in sans.ip:
        d.subject_alt_names.add(ip_address=ip)
    not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
    d.days_until_expiration = max(0, (not_after - now).days)
    d.valid_from.FromDatetime(not_before)
    d.expiration_time.FromDatetime(not_after)
    return d


def _certs(pem: bytes) -> list[x509.Certificate]:
    # cryptography only here, on the admin page: the data path reads certificates with proxy.tls.der.
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError:
        return []


def certificates(factories) -> certs_pb2.Certificates:
    """``/certs``: per TLS context in use, its trusted CAs and its own chain (``<inline>`` or
    ``sds:<name>`` as the path)."""
    now = datetime.datetime.now(datetime.UTC)
    out = certs_pb2.Certificates()
    for factory in factories:
        entry = out.certificates.add()
        cfg = factory.config
        secrets = getattr(factory, "_secrets", {})
        chain_pem, chain_path = b"", "<inline>"
        if cfg.certificates:
            chain_pem = cfg.certificates[0].chain_pem
        for sds in cfg.certificate_sds:
            secret = secrets.get(sds.name)
            if secret is not None:
                chain_pem, chain_path = _data(secret.tls_certificate.certificate_chain), f"sds:{sds.name}"
        ca_pem, ca_path = cfg.trusted_ca or b"", "<inline>"
        if cfg.validation_sds is not None:
            secret = secrets.get(cfg.validation_sds.name)
            if secret is not None:
                ca_pem = _data(secret.validation_context.trusted_ca)
                ca_path = f"sds:{cfg.validation_sds.name}"
        for cert in _certs(ca_pem):
            entry.ca_cert.append(_details(cert, now, ca_path))
        for cert in _certs(chain_pem):
            entry.cert_chain.append(_details(cert, now, chain_path))
    return out


def _data(ds) -> bytes:
    kind = ds.WhichOneof("specifier")
    if kind == "inline_bytes":
        return ds.inline_bytes
    if kind == "inline_string":
        return ds.inline_string.encode()
    if kind == "filename":
        try:
            with open(ds.filename, "rb") as f:
                return f.read()
        except OSError:
            return b""
    return b""


def tls_factories(server) -> list:
    """Every TLS socket factory of the server: listeners' filter chains, then clusters."""
    out = []
    for listener in getattr(server, "listener_manager", None) or []:
        out.extend(getattr(listener, "tls_factories", list)())
    cm = getattr(server, "cluster_manager", None)
    for cluster in getattr(cm, "clusters", {}).values():
        ts = getattr(cluster, "transport_socket", None)
        if ts is not None:
            out.append(ts)
    return out
