"""Envoy v3 `Secret` resources as Istio's agent names them: `default` (certificate + key) and `ROOTCA`
(the trust bundle). Pure."""

from __future__ import annotations

from dataclasses import dataclass

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2
from google.protobuf import any_pb2

SECRET_TYPE_URL = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
WORKLOAD = "default"
ROOTCA = "ROOTCA"
NAMES = (WORKLOAD, ROOTCA)


@dataclass(frozen=True)
class CertState:
    """What the agent holds now. `version` grows by one on every rotation."""

    version: int
    key_pem: bytes
    chain: tuple[str, ...]  # leaf first, as citadel returned it (root last)
    root_pem: bytes
    not_before: float
    not_after: float
    spiffe_id: str

    @property
    def chain_pem(self) -> bytes:
        """Leaf and intermediates; the root travels in ROOTCA."""
        certs = self.chain[:-1] if len(self.chain) > 1 else self.chain
        return "".join(certs).encode()


def secret(name: str, state: CertState) -> secret_pb2.Secret:
    if name == WORKLOAD:
        return secret_pb2.Secret(
            name=name,
            tls_certificate=common_pb2.TlsCertificate(
                certificate_chain=base_pb2.DataSource(inline_bytes=state.chain_pem),
                private_key=base_pb2.DataSource(inline_bytes=state.key_pem),
            ),
        )
    if name == ROOTCA:
        return secret_pb2.Secret(
            name=name,
            validation_context=common_pb2.CertificateValidationContext(
                trusted_ca=base_pb2.DataSource(inline_bytes=state.root_pem)
            ),
        )
    raise KeyError(name)


def packed(name: str, state: CertState) -> any_pb2.Any:
    message = any_pb2.Any()
    message.Pack(secret(name, state))
    return message
