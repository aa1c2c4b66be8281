"""A real agent against a real citadel: SDS on a Unix socket serves `default` and `ROOTCA`, pushes each
rotation on the open stream, and keeps serving while citadel is down."""

from __future__ import annotations

import queue
import subprocess
import time

import grpc
import pytest
from cryptography import x509
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc

from tests.integration.citadel.harness import start_citadel
from tests.support.net import free_port

TYPE_URL = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
ME = "spiffe://cluster.local/ns/default/sa/bookinfo"


class SdsStream:
    """One StreamSecrets stream; ACKs every response like Envoy does."""

    def __init__(self, socket_path, names=("default", "ROOTCA")) -> None:
        self.channel = grpc.insecure_channel(f"unix:{socket_path}")
        self.names = list(names)
        self.requests: queue.Queue = queue.Queue()
        self.requests.put(discovery_pb2.DiscoveryRequest(type_url=TYPE_URL, resource_names=self.names))
        self.responses = sds_pb2_grpc.SecretDiscoveryServiceStub(self.channel).StreamSecrets(
            iter(self.requests.get, None)
        )

    def next(self) -> dict:
        """The next response (blocking; the test's timeout bounds it), ACKed; secrets by name + _version."""
        response = next(self.responses)
        self.requests.put(
            discovery_pb2.DiscoveryRequest(
                type_url=TYPE_URL, resource_names=self.names,
                version_info=response.version_info, response_nonce=response.nonce,
            )
        )  # fmt: skip
        out: dict = {"_version": response.version_info}
        for packed in response.resources:
            secret = secret_pb2.Secret()
            packed.Unpack(secret)
            out[secret.name] = secret
        return out

    def close(self) -> None:
        self.requests.put(None)
        self.responses.cancel()
        self.channel.close()


def leaf(secrets) -> x509.Certificate:
    return x509.load_pem_x509_certificate(secrets["default"].tls_certificate.certificate_chain.inline_bytes)


def start_agent(procs, tmp_path, citadel, ttl="6s", retry_max="0.5s"):
    token = tmp_path / "token"
    token.write_text(citadel.token("default", "bookinfo"))
    socket_path = tmp_path / "sds.sock"
    proc = procs.python(
        "-m", "proxy.agent", "--citadel", f"127.0.0.1:{citadel.grpc_port}",
        "--citadel-mtls", f"127.0.0.1:{citadel.mtls_port}", "--root-cert", str(citadel.root_dir / "root-cert.pem"),
        "--token-file", str(token), "--sds-socket", str(socket_path), "--namespace", "default",
        "--service-account", "bookinfo", "--cert-ttl", ttl, "--retry-max", retry_max, "--no-proxy",
    )  # fmt: skip
    deadline = time.monotonic() + 15
    while not socket_path.exists():
        assert proc.poll() is None, procs.output(proc)
        assert time.monotonic() < deadline, "agent did not open its SDS socket"
        time.sleep(0.02)
    return proc, socket_path


def test_sds_serves_default_and_rootca_and_pushes_rotation(procs, tmp_path):
    citadel = start_citadel(procs, tmp_path / "ca")
    agent, socket_path = start_agent(procs, tmp_path, citadel, ttl="6s")
    stream = SdsStream(socket_path)
    try:
        first = stream.next()
        assert set(first) == {"default", "ROOTCA", "_version"}
        root_pem = first["ROOTCA"].validation_context.trusted_ca.inline_bytes
        assert root_pem == citadel.root_pem
        cert = leaf(first)
        cert.verify_directly_issued_by(x509.load_pem_x509_certificate(root_pem))
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert [u.value for u in san] == [ME]
        assert first["default"].tls_certificate.private_key.inline_bytes.startswith(b"-----BEGIN PRIVATE KEY")
        (tmp_path / "root.pem").write_bytes(root_pem)
        (tmp_path / "leaf.pem").write_bytes(first["default"].tls_certificate.certificate_chain.inline_bytes)
        check = subprocess.run(["openssl", "verify", "-CAfile", str(tmp_path / "root.pem"), str(tmp_path / "leaf.pem")],
                               capture_output=True, text=True)  # fmt: skip
        assert check.returncode == 0, check.stderr
        # TTL 6 s: the agent renews at ~3 s and pushes on this same stream, no reconnect.
        second = stream.next()
        assert int(second["_version"]) > int(first["_version"])
        assert leaf(second).serial_number != cert.serial_number
        assert leaf(second).not_valid_after_utc > cert.not_valid_after_utc
    finally:
        stream.close()
    out = procs.output(agent)
    assert "auth=mtls" in out  # the renewal used the current certificate, not the token
    assert "event=sds.nack" not in out


def test_fetch_secrets_and_unknown_names(procs, tmp_path):
    citadel = start_citadel(procs, tmp_path / "ca")
    _, socket_path = start_agent(procs, tmp_path, citadel, ttl="1h")
    with grpc.insecure_channel(f"unix:{socket_path}") as channel:
        stub = sds_pb2_grpc.SecretDiscoveryServiceStub(channel)
        reply = stub.FetchSecrets(
            discovery_pb2.DiscoveryRequest(type_url=TYPE_URL, resource_names=["ROOTCA", "nope"]), timeout=15
        )
        assert len(reply.resources) == 1
        with pytest.raises(grpc.RpcError) as e:
            stub.FetchSecrets(discovery_pb2.DiscoveryRequest(type_url="type.googleapis.com/x"), timeout=5)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_keeps_serving_while_citadel_is_down_and_recovers(procs, tmp_path):
    ports = {"grpc_port": free_port(), "http_port": free_port(), "mtls_port": free_port()}
    citadel = start_citadel(procs, tmp_path / "ca", **ports)
    agent, socket_path = start_agent(procs, tmp_path, citadel, ttl="8s", retry_max="0.5s")
    stream = SdsStream(socket_path)
    try:
        first = stream.next()
        procs.stop(citadel.proc)
        # the current certificate is still served to a new client while citadel is unreachable
        with grpc.insecure_channel(f"unix:{socket_path}") as channel:
            reply = sds_pb2_grpc.SecretDiscoveryServiceStub(channel).FetchSecrets(
                discovery_pb2.DiscoveryRequest(type_url=TYPE_URL, resource_names=["default"]), timeout=5
            )
        secret = secret_pb2.Secret()
        reply.resources[0].Unpack(secret)
        assert secret.tls_certificate.certificate_chain.inline_bytes == (
            first["default"].tls_certificate.certificate_chain.inline_bytes
        )
        deadline = time.monotonic() + 10
        while "event=cert.fetch_failed" not in procs.output(agent):
            assert time.monotonic() < deadline, procs.output(agent)
            time.sleep(0.05)
        assert 'serving="current certificate"' in procs.output(agent)
        start_citadel(procs, tmp_path / "ca", **ports)
        second = stream.next()
        assert leaf(second).serial_number != leaf(first).serial_number
    finally:
        stream.close()
