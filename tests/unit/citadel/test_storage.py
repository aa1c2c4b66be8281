"""Root-dir storage: created once with 0600 keys, reused after; plug-in CA files checked."""

import datetime as dt
import stat

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from citadel import storage
from citadel.ca import certs, keys


def test_root_created_once_then_reused(tmp_path):
    first = storage.load_or_create_root(tmp_path / "ca")
    assert first.created
    assert stat.S_IMODE((tmp_path / "ca" / storage.ROOT_KEY).stat().st_mode) == 0o600
    assert (tmp_path / "ca" / "root-cert.pem").read_text() == certs.to_pem(first.signing_cert)
    again = storage.load_or_create_root(tmp_path / "ca", key_type="rsa-2048")
    assert not again.created and again.signing_cert == first.signing_cert


def test_rsa_root_option(tmp_path):
    material = storage.load_or_create_root(tmp_path, key_type="rsa-2048")
    assert material.signing_key.key_size == 2048


def test_half_a_root_is_an_error_not_a_new_root(tmp_path):
    storage.load_or_create_root(tmp_path)
    (tmp_path / storage.ROOT_KEY).unlink()
    with pytest.raises(ValueError, match="missing"):
        storage.load_or_create_root(tmp_path)


def test_token_key_is_private_and_stable(tmp_path):
    key = storage.load_or_create_token_key(tmp_path)
    assert stat.S_IMODE((tmp_path / storage.TOKEN_KEY).stat().st_mode) == 0o600
    assert storage.load_or_create_token_key(tmp_path) == key == storage.read_token_key(tmp_path)
    with pytest.raises(ValueError, match="start citadel"):
        storage.read_token_key(tmp_path / "nowhere")


def _intermediate(root_key, root_cert):
    key = keys.generate()
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "intermediate")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(root_cert.subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(root_key, keys.signature_hash(root_key))
    )
    return key, cert


def _write_plugin(d, ca_cert, ca_key, root, chain):
    d.mkdir()
    (d / "ca-cert.pem").write_text(certs.to_pem(ca_cert))
    (d / "ca-key.pem").write_bytes(keys.to_pem(ca_key))
    (d / "root-cert.pem").write_text(certs.to_pem(root))
    (d / "cert-chain.pem").write_text("".join(certs.to_pem(c) for c in chain))


def test_plugin_chain_runs_through_intermediate_to_root(tmp_path):
    root_key = keys.generate()
    root = certs.self_signed_root(root_key, "corp", dt.datetime.now(dt.UTC))
    ikey, icert = _intermediate(root_key, root)
    _write_plugin(tmp_path / "p", icert, ikey, root, [icert, root])
    material = storage.load_plugin(tmp_path / "p")
    assert material.signing_cert == icert and material.chain == [icert, root]


def test_plugin_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="missing ca-cert.pem"):
        storage.load_plugin(tmp_path)
    root_key = keys.generate()
    root = certs.self_signed_root(root_key, "corp", dt.datetime.now(dt.UTC))
    other_root = certs.self_signed_root(keys.generate(), "other", dt.datetime.now(dt.UTC))
    ikey, icert = _intermediate(root_key, root)
    _write_plugin(tmp_path / "wrong-root", icert, ikey, other_root, [icert])
    with pytest.raises(ValueError, match="is not issued by"):
        storage.load_plugin(tmp_path / "wrong-root")
    _write_plugin(tmp_path / "wrong-key", icert, keys.generate(), root, [icert])
    with pytest.raises(ValueError, match="does not match"):
        storage.load_plugin(tmp_path / "wrong-key")
