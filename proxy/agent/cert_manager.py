"""The rotation loop: get a certificate, hold it, renew it at half its lifetime, back off when citadel is
down, and tell subscribers (the SDS server) about every new one."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import grpc
from cryptography import x509

from isthmus.log import event
from proxy.agent import csr
from proxy.agent.citadel_client import CitadelClient
from proxy.agent.rotation import RotationPolicy
from proxy.agent.secrets import CertState

log = logging.getLogger("proxy.agent.certs")


def check_chain(chain: list[str], spiffe_uri: str) -> tuple[float, float]:
    """The leaf's validity window; raise ValueError if citadel returned something we did not ask for."""
    leaf = x509.load_pem_x509_certificate(chain[0].encode())
    uris = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier
    )
    if uris != [spiffe_uri]:
        raise ValueError(f"citadel returned a certificate for {uris}, not {spiffe_uri}")
    return leaf.not_valid_before_utc.timestamp(), leaf.not_valid_after_utc.timestamp()


class CertManager:
    def __init__(
        self,
        client: CitadelClient,
        spiffe_uri: str,
        ttl: int,
        policy: RotationPolicy | None = None,
        key_type: str = "ec-p256",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.spiffe_uri = spiffe_uri
        self.ttl = ttl
        self.policy = policy or RotationPolicy()
        self.key_type = key_type
        self.clock = clock
        self.state: CertState | None = None
        self._changed = asyncio.Condition()
        self.failures = 0

    async def wait_newer(self, version: int) -> CertState:
        """Return a state newer than `version` (0 = any), waiting for a rotation if needed."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.state is not None and self.state.version > version)
            return self.state

    async def _fetch(self) -> CertState:
        key_pem, csr_pem = csr.build(self.spiffe_uri, self.key_type)
        current = self.state
        chain = None
        if current is not None and self.clock() < current.not_after and self.client.mtls_address:
            try:
                chain = await self.client.with_certificate(
                    csr_pem, self.ttl, current.key_pem, "".join(current.chain).encode()
                )
                method = "mtls"
            except grpc.RpcError as e:
                if self.client.token_file is None:
                    raise
                event(log, logging.WARNING, "cert.renew_mtls_failed", code=e.code().name, detail=e.details())
        if chain is None:
            chain = await self.client.with_token(csr_pem, self.ttl)
            method = "token"
        not_before, not_after = check_chain(chain, self.spiffe_uri)
        version = current.version + 1 if current else 1
        state = CertState(
            version, key_pem, tuple(chain), self.client.root_pem(), not_before, not_after, self.spiffe_uri
        )
        event(log, logging.INFO, "cert.issued", spiffe_id=self.spiffe_uri, version=version, auth=method,
              not_after=int(not_after))  # fmt: skip
        return state

    async def run(self) -> None:
        next_attempt = self.clock()
        while True:
            delay = next_attempt - self.clock()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                state = await self._fetch()
            except (grpc.RpcError, ValueError, OSError) as e:
                self.failures += 1
                current = self.state
                detail = f"{e.code().name}: {e.details()}" if isinstance(e, grpc.RpcError) else str(e)
                valid = current is not None and self.clock() < current.not_after
                next_attempt = self.policy.retry_at(
                    self.clock(), self.failures, current.not_after if current else None
                )
                event(log, logging.WARNING, "cert.fetch_failed", error=detail, failures=self.failures,
                      serving="current certificate" if valid else "nothing valid",
                      retry_in=f"{next_attempt - self.clock():.2f}s")  # fmt: skip
                continue
            self.failures = 0
            async with self._changed:
                self.state = state
                self._changed.notify_all()
            next_attempt = self.policy.renew_at(state.not_before, state.not_after)
