"""Start a real `python -m citadel` on free ports and talk to it over real gRPC/TLS."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from api.istio.v1.auth import ca_pb2, ca_pb2_grpc
from tests.support.net import free_port, wait_for_http, wait_for_port


@dataclass
class Citadel:
    proc: subprocess.Popen
    root_dir: Path
    grpc_port: int
    http_port: int
    mtls_port: int

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def root_pem(self) -> bytes:
        return (self.root_dir / "root-cert.pem").read_bytes()

    def token(self, namespace: str, sa: str, ttl: str = "1h") -> str:
        out = subprocess.run(
            [sys.executable, "-m", "isthmus", "token", "create", "--namespace", namespace,
             "--service-account", sa, "--ttl", ttl, "--root-dir", str(self.root_dir)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return out.stdout.strip()

    def stub(self, client_key_pem: bytes | None = None, client_chain_pem: bytes | None = None):
        creds = grpc.ssl_channel_credentials(self.root_pem, client_key_pem, client_chain_pem)
        port = self.mtls_port if client_key_pem else self.grpc_port
        channel = grpc.secure_channel(f"127.0.0.1:{port}", creds)
        return channel, ca_pb2_grpc.IstioCertificateServiceStub(channel)


def start_citadel(
    procs, root_dir: Path, *extra: str, grpc_port=None, http_port=None, mtls_port=None
) -> Citadel:
    grpc_port = grpc_port or free_port()
    http_port = http_port or free_port()
    mtls_port = mtls_port or free_port()
    proc = procs.python(
        "-m", "citadel", "--root-dir", str(root_dir), "--grpc-addr", f"127.0.0.1:{grpc_port}",
        "--http-addr", f"127.0.0.1:{http_port}", "--grpc-mtls-addr", f"127.0.0.1:{mtls_port}", *extra,
    )  # fmt: skip
    wait_for_http(f"http://127.0.0.1:{http_port}/ready", proc=proc)
    wait_for_port("127.0.0.1", grpc_port, proc=proc)
    wait_for_port("127.0.0.1", mtls_port, proc=proc)
    return Citadel(proc, root_dir, grpc_port, http_port, mtls_port)


def csr_for(uri: str, key=None) -> tuple[str, bytes]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode(), key_pem


def create(stub, csr: str, token: str | None = None, ttl: int = 600) -> list[str]:
    metadata = [("authorization", f"Bearer {token}")] if token else None
    reply = stub.CreateCertificate(
        ca_pb2.IstioCertificateRequest(csr=csr, validity_duration=ttl), metadata=metadata, timeout=10
    )
    return list(reply.cert_chain)
