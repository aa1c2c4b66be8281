"""Private keys: generation, the key types citadel accepts, PEM encoding (pure, no files)."""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from citadel.ca.errors import INVALID_ARGUMENT, CaError

KEY_TYPES = ("ec-p256", "rsa-2048")
_ACCEPTED_CURVES = {"secp256r1": "EC P-256", "secp384r1": "EC P-384"}
MIN_RSA_BITS = 2048


def generate(key_type: str = "ec-p256"):
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa-2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"unknown key type {key_type!r}; expected one of {', '.join(KEY_TYPES)}")


def signature_hash(private_key):
    """The digest to sign with: SHA-384 for P-384 keys, SHA-256 otherwise."""
    if isinstance(private_key, ec.EllipticCurvePrivateKey) and private_key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def check_public_key(public_key) -> str:
    """Describe an accepted workload key ("EC P-256", "RSA 2048"), or raise CaError(unsupported_key)."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        name = _ACCEPTED_CURVES.get(public_key.curve.name)
        if name:
            return name
        what = f"EC key on curve {public_key.curve.name}"
    elif isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size >= MIN_RSA_BITS:
            return f"RSA {public_key.key_size}"
        what = f"RSA key of {public_key.key_size} bits"
    else:
        what = f"{type(public_key).__name__.removeprefix('_')} key"
    raise CaError(
        INVALID_ARGUMENT,
        "unsupported_key",
        f"unsupported key: {what}; citadel accepts EC P-256, EC P-384 and RSA >= {MIN_RSA_BITS} bits",
    )


def to_pem(private_key) -> bytes:
    return private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def from_pem(data: bytes):
    return serialization.load_pem_private_key(data, password=None)
