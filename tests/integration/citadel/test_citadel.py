"""A real citadel process: issued chains verify with openssl, identities cannot be borrowed, renewal over
mTLS, restarts keep the root, plug-in CA, metrics by reason, /root-cert."""

from __future__ import annotations

import datetime as dt
import subprocess
import time
import urllib.request

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.citadel.harness import create, csr_for, start_citadel

ME = "spiffe://cluster.local/ns/default/sa/bookinfo"


def openssl_verify(tmp_path, root_pem: bytes, chain: list[str]) -> subprocess.CompletedProcess:
    (tmp_path / "root.pem").write_bytes(root_pem)
    (tmp_path / "leaf.pem").write_text(chain[0])
    (tmp_path / "untrusted.pem").write_text("".join(chain[1:-1]) or chain[-1])
    return subprocess.run(
        ["openssl", "verify", "-CAfile", str(tmp_path / "root.pem"), "-untrusted",
         str(tmp_path / "untrusted.pem"), str(tmp_path / "leaf.pem")],
        capture_output=True, text=True,
    )  # fmt: skip


def openssl_text(pem: str) -> str:
    return subprocess.run(
        ["openssl", "x509", "-noout", "-text"], input=pem, capture_output=True, text=True, check=True
    ).stdout


def metrics(citadel) -> dict:
    text = urllib.request.urlopen(f"{citadel.http}/metrics", timeout=5).read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


@pytest.fixture
def citadel(procs, tmp_path):
    return start_citadel(procs, tmp_path / "ca", "--max-ttl", "1h")


def test_issued_chain_verifies_and_san_is_exactly_the_spiffe_id(citadel, tmp_path):
    _, stub = citadel.stub()
    csr, _ = csr_for(ME)
    chain = create(stub, csr, citadel.token("default", "bookinfo"))
    result = openssl_verify(tmp_path, citadel.root_pem, chain)
    assert result.returncode == 0, result.stderr
    assert "leaf.pem: OK" in result.stdout
    text = openssl_text(chain[0])
    san = text.split("X509v3 Subject Alternative Name: critical")[1].splitlines()[1].strip()
    assert san == f"URI:{ME}"
    assert "CA:FALSE" in text and "TLS Web Server Authentication, TLS Web Client Authentication" in text
    assert "Digital Signature, Key Encipherment" in text
    served = urllib.request.urlopen(f"{citadel.http}/root-cert", timeout=5).read()
    assert served == citadel.root_pem and chain[-1].encode() == served


def test_cannot_obtain_a_certificate_for_another_identity(citadel):
    _, stub = citadel.stub()
    with pytest.raises(grpc.RpcError) as e:
        create(
            stub,
            csr_for("spiffe://cluster.local/ns/default/sa/reviews")[0],
            citadel.token("default", "bookinfo"),
        )
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "sa/reviews" in e.value.details() and "sa/bookinfo" in e.value.details()


def test_bad_requests_get_clear_errors_and_are_counted_by_reason(citadel):
    _, stub = citadel.stub()
    token = citadel.token("default", "bookinfo")
    cases = [
        (lambda: create(stub, csr_for(ME)[0], citadel.token("default", "bookinfo")[:-2] + "AA"),
         grpc.StatusCode.UNAUTHENTICATED, "signature"),
        (lambda: create(stub, csr_for(ME)[0]), grpc.StatusCode.UNAUTHENTICATED, "no credentials"),
        (lambda: create(stub, csr_for(ME)[0], token, ttl=7200), grpc.StatusCode.INVALID_ARGUMENT, "over the maximum"),
        (lambda: create(stub, "garbage", token), grpc.StatusCode.INVALID_ARGUMENT, "PEM"),
        (lambda: create(stub, csr_for(ME, key=ec.generate_private_key(ec.SECP521R1()))[0], token),
         grpc.StatusCode.INVALID_ARGUMENT, "unsupported key"),
    ]  # fmt: skip
    for call, code, words in cases:
        with pytest.raises(grpc.RpcError) as e:
            call()
        assert e.value.code() == code and words in e.value.details(), e.value.details()
    samples = metrics(citadel)
    reasons = {
        dict(labels)["reason"]: value
        for (name, labels), value in samples.items()
        if name == "citadel_server_csr_rejections_total"
    }
    assert reasons == {
        "invalid_token": 1.0,
        "no_credentials": 1.0,
        "ttl_over_cap": 1.0,
        "malformed_csr": 1.0,
        "unsupported_key": 1.0,
    }
    assert samples[("citadel_server_success_cert_issuance_count_total", ())] == 0


def test_expired_token_is_rejected(citadel, procs):
    _, stub = citadel.stub()
    token = citadel.token("default", "bookinfo", ttl="1s")
    # The token's exp is a whole second after iat: wait until that second has surely passed.
    time.sleep(2.1)
    with pytest.raises(grpc.RpcError) as e:
        create(stub, csr_for(ME)[0], token)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED and "expired" in e.value.details()
    assert "reason=expired_token" in procs.output(citadel.proc)


def test_renewal_over_mtls_keeps_the_identity(citadel):
    _, stub = citadel.stub()
    csr, key_pem = csr_for(ME)
    chain = create(stub, csr, citadel.token("default", "bookinfo"))
    channel, mtls = citadel.stub(key_pem, "".join(chain).encode())
    new_csr, _ = csr_for(ME)
    renewed = create(mtls, new_csr)  # no token: the certificate is the credential
    leaf = x509.load_pem_x509_certificate(renewed[0].encode())
    uris = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [u.value for u in uris] == [ME]
    with pytest.raises(grpc.RpcError) as e:
        create(mtls, csr_for("spiffe://cluster.local/ns/default/sa/admin")[0])
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    channel.close()


def test_a_foreign_client_certificate_does_not_authenticate(citadel, tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "self")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(ME)]), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    channel, stub = citadel.stub(key_pem, cert.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(grpc.RpcError) as e:
        create(stub, csr_for(ME)[0])
    # Refused either in the TLS handshake (unknown CA) or by citadel's own check.
    assert e.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED)
    channel.close()


def test_restart_keeps_the_root(procs, tmp_path):
    first = start_citadel(procs, tmp_path / "ca")
    _, stub = first.stub()
    before = create(stub, csr_for(ME)[0], first.token("default", "bookinfo"))
    root_before = first.root_pem
    assert procs.stop(first.proc) == 0
    second = start_citadel(procs, tmp_path / "ca")
    assert second.root_pem == root_before
    _, stub = second.stub()
    after = create(stub, csr_for(ME)[0], second.token("default", "bookinfo"))
    assert after[-1].encode() == root_before
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    assert openssl_verify(tmp_path / "old", root_before, before).returncode == 0
    assert openssl_verify(tmp_path / "new", root_before, after).returncode == 0
    assert "created" not in procs.output(second.proc).split("ca.ready")[1].splitlines()[0]


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def test_plugin_ca_chain_verifies_to_the_supplied_root(procs, tmp_path):
    plug = tmp_path / "plug"
    plug.mkdir()
    (plug / "int.ext").write_text(
        "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n"
    )
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "root-key.pem", cwd=plug)
    _openssl("req", "-x509", "-new", "-key", "root-key.pem", "-subj", "/O=Corp/CN=Corp Root", "-days", "30",
             "-out", "root-cert.pem", cwd=plug)  # fmt: skip
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca-key.ec.pem", cwd=plug)
    _openssl("pkcs8", "-topk8", "-nocrypt", "-in", "ca-key.ec.pem", "-out", "ca-key.pem", cwd=plug)
    _openssl(
        "req", "-new", "-key", "ca-key.pem", "-subj", "/O=Corp/CN=Intermediate", "-out", "ca.csr", cwd=plug
    )
    _openssl("x509", "-req", "-in", "ca.csr", "-CA", "root-cert.pem", "-CAkey", "root-key.pem",
             "-CAcreateserial", "-days", "20", "-extfile", "int.ext", "-out", "ca-cert.pem", cwd=plug)  # fmt: skip
    (plug / "cert-chain.pem").write_bytes(
        (plug / "ca-cert.pem").read_bytes() + (plug / "root-cert.pem").read_bytes()
    )
    citadel = start_citadel(procs, tmp_path / "ca", "--plugin-certs", str(plug))
    assert citadel.root_pem == (plug / "root-cert.pem").read_bytes()
    _, stub = citadel.stub()
    chain = create(stub, csr_for(ME)[0], citadel.token("default", "bookinfo"))
    assert len(chain) == 3 and chain[1].encode() == (plug / "ca-cert.pem").read_bytes()
    result = openssl_verify(tmp_path, (plug / "root-cert.pem").read_bytes(), chain)
    assert result.returncode == 0, result.stderr


def test_broken_plugin_dir_fails_clearly(procs, tmp_path):
    (tmp_path / "plug").mkdir()
    proc = procs.python("-m", "citadel", "--root-dir", str(tmp_path / "ca"), "--plugin-certs", str(tmp_path / "plug"),
                        "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0")  # fmt: skip
    assert proc.wait(15) == 1
    assert "missing ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem" in procs.output(proc)
