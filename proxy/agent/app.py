"""Run the agent: the certificate manager and the SDS server on a Unix socket, until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import grpc
from envoy.service.secret.v3 import sds_pb2_grpc

from isthmus.log import event
from proxy.agent import csr
from proxy.agent.cert_manager import CertManager
from proxy.agent.citadel_client import CitadelClient
from proxy.agent.rotation import RotationPolicy
from proxy.agent.sds_server import SecretDiscovery

log = logging.getLogger("proxy.agent")


@dataclass
class AgentConfig:
    citadel: str
    root_cert: Path
    token_file: Path | None
    sds_socket: Path
    namespace: str
    service_account: str
    trust_domain: str = "cluster.local"
    citadel_mtls: str | None = None
    cert_ttl: int = 24 * 3600
    retry_max: float = 30.0
    key_type: str = "ec-p256"


async def serve(config: AgentConfig) -> int:
    spiffe_uri = csr.spiffe_id(config.trust_domain, config.namespace, config.service_account)
    client = CitadelClient(config.citadel, config.root_cert, config.token_file, config.citadel_mtls)
    certs = CertManager(client, spiffe_uri, config.cert_ttl, RotationPolicy(retry_max=config.retry_max),
                        config.key_type)  # fmt: skip
    server = grpc.aio.server()
    sds_pb2_grpc.add_SecretDiscoveryServiceServicer_to_server(SecretDiscovery(certs), server)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(config.sds_socket)  # a stale socket from an earlier run
    config.sds_socket.parent.mkdir(parents=True, exist_ok=True)
    if server.add_insecure_port(f"unix:{config.sds_socket}") == 0:
        print(f"agent: cannot listen on unix:{config.sds_socket}", flush=True)
        return 1
    os.chmod(config.sds_socket, 0o600)
    await server.start()
    event(log, logging.INFO, "sds.listening", socket=str(config.sds_socket), spiffe_id=spiffe_uri)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    rotation = asyncio.create_task(certs.run())
    await stop.wait()
    rotation.cancel()
    await server.stop(grace=1)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(config.sds_socket)
    event(log, logging.INFO, "agent.stopped")
    return 0


def run(config: AgentConfig) -> int:
    return asyncio.run(serve(config))
