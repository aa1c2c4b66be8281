"""citadel's files: the self-signed root and token key in --root-dir, Istio's plug-in CA files.

Keys are written with 0600 permissions, atomically (write a temp file, then rename), so a crash never
leaves half a key behind. The root is created on first start and reused on every later start.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from citadel.ca import certs, keys, tokens

ROOT_CERT = "root-cert.pem"
ROOT_KEY = "root-key.pem"
TOKEN_KEY = "token-key"
PLUGIN_FILES = ("ca-cert.pem", "ca-key.pem", "root-cert.pem", "cert-chain.pem")


@dataclass
class CaMaterial:
    signing_cert: x509.Certificate
    signing_key: object
    chain: list[x509.Certificate]  # after the signing cert's leaves: intermediates ..., root last
    created: bool = False


def write_file(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def ensure_dir(root_dir: Path) -> None:
    root_dir.mkdir(parents=True, exist_ok=True, mode=0o700)


def load_or_create_root(root_dir: Path, key_type: str = "ec-p256", organization: str = "cluster.local"):
    """The self-signed root: read from root_dir if present, else created and written there."""
    ensure_dir(root_dir)
    cert_path, key_path = root_dir / ROOT_CERT, root_dir / ROOT_KEY
    if cert_path.exists() or key_path.exists():
        if not (cert_path.exists() and key_path.exists()):
            missing = key_path if cert_path.exists() else cert_path
            raise ValueError(f"{missing} is missing but its pair exists; refusing to create a new root")
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = keys.from_pem(key_path.read_bytes())
        _check_pair(cert, key, f"{cert_path} and {key_path}")
        return CaMaterial(cert, key, [cert], created=False)
    key = keys.generate(key_type)
    cert = certs.self_signed_root(key, organization, dt.datetime.now(dt.UTC).replace(microsecond=0))
    write_file(key_path, keys.to_pem(key), 0o600)
    write_file(cert_path, certs.to_pem(cert).encode(), 0o644)
    return CaMaterial(cert, key, [cert], created=True)


def _check_pair(cert: x509.Certificate, key, what: str) -> None:
    if cert.public_key().public_numbers() != key.public_key().public_numbers():
        raise ValueError(f"{what}: the private key does not match the certificate")


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def load_plugin(plugin_dir: Path) -> CaMaterial:
    """Istio's plug-in CA: ca-cert.pem + ca-key.pem sign; cert-chain.pem runs from ca-cert to the root."""
    missing = [name for name in PLUGIN_FILES if not (plugin_dir / name).is_file()]
    if missing:
        raise ValueError(f"--plugin-certs {plugin_dir}: missing {', '.join(missing)}")
    try:
        signing_cert = x509.load_pem_x509_certificate((plugin_dir / "ca-cert.pem").read_bytes())
        signing_key = keys.from_pem((plugin_dir / "ca-key.pem").read_bytes())
        roots = x509.load_pem_x509_certificates((plugin_dir / "root-cert.pem").read_bytes())
        listed = x509.load_pem_x509_certificates((plugin_dir / "cert-chain.pem").read_bytes())
    except ValueError as e:
        raise ValueError(f"--plugin-certs {plugin_dir}: {e}") from None
    _check_pair(signing_cert, signing_key, f"{plugin_dir}/ca-cert.pem and ca-key.pem")
    if not _is_ca(signing_cert):
        raise ValueError(f"{plugin_dir}/ca-cert.pem is not a CA certificate (basicConstraints CA:FALSE)")
    root = roots[0]
    # cert-chain.pem usually starts with ca-cert.pem itself and may end with the root: keep what lies between.
    chain = [c for c in listed if c != signing_cert and c != root]
    full = [signing_cert, *chain, root]
    for child, parent in zip(full, full[1:], strict=False):
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature):
            raise ValueError(
                f"--plugin-certs {plugin_dir}: {child.subject.rfc4514_string()} is not issued by "
                f"{parent.subject.rfc4514_string()}; cert-chain.pem must run from ca-cert.pem to root-cert.pem"
            ) from None
    if signing_cert == root:
        return CaMaterial(signing_cert, signing_key, [root])
    return CaMaterial(signing_cert, signing_key, [signing_cert, *chain, root])


def load_or_create_token_key(root_dir: Path) -> bytes:
    ensure_dir(root_dir)
    path = root_dir / TOKEN_KEY
    if path.exists():
        return read_token_key(root_dir)
    key = secrets.token_bytes(tokens.KEY_BYTES)
    write_file(path, key.hex().encode() + b"\n", 0o600)
    return key


def read_token_key(root_dir: Path) -> bytes:
    path = root_dir / TOKEN_KEY
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        raise ValueError(f"no token key at {path}: start citadel with --root-dir {root_dir} first") from None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"{path} is not a hex token key") from None
    if len(key) < 16:
        raise ValueError(f"{path}: token key too short")
    return key
