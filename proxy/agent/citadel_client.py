"""Calls citadel's IstioCertificateService/CreateCertificate over TLS, trusting citadel's root file.

With a bootstrap token (`authorization: Bearer`) on citadel's main port, or with the current certificate
over mutual TLS on its renewal port."""

from __future__ import annotations

from pathlib import Path

import grpc

from api.istio.v1.auth import ca_pb2, ca_pb2_grpc


class CitadelClient:
    def __init__(
        self,
        address: str,
        root_cert_file: Path,
        token_file: Path | None,
        mtls_address: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.address = address
        self.mtls_address = mtls_address
        self.root_cert_file = root_cert_file
        self.token_file = token_file
        self.timeout = timeout

    def root_pem(self) -> bytes:
        return self.root_cert_file.read_bytes()

    async def _call(self, address: str, credentials, csr_pem: str, ttl: int, metadata) -> list[str]:
        async with grpc.aio.secure_channel(address, credentials) as channel:
            stub = ca_pb2_grpc.IstioCertificateServiceStub(channel)
            reply = await stub.CreateCertificate(
                ca_pb2.IstioCertificateRequest(csr=csr_pem, validity_duration=ttl),
                metadata=metadata,
                timeout=self.timeout,
            )
        if not reply.cert_chain:
            raise ValueError("citadel returned an empty certificate chain")
        return list(reply.cert_chain)

    async def with_token(self, csr_pem: str, ttl: int) -> list[str]:
        if self.token_file is None:
            raise ValueError("no --token-file to authenticate with")
        token = self.token_file.read_text().strip()
        credentials = grpc.ssl_channel_credentials(self.root_pem())
        return await self._call(
            self.address, credentials, csr_pem, ttl, [("authorization", f"Bearer {token}")]
        )

    async def with_certificate(self, csr_pem: str, ttl: int, key_pem: bytes, chain_pem: bytes) -> list[str]:
        if not self.mtls_address:
            raise ValueError("no citadel mTLS address to renew with")
        credentials = grpc.ssl_channel_credentials(self.root_pem(), key_pem, chain_pem)
        return await self._call(self.mtls_address, credentials, csr_pem, ttl, None)
