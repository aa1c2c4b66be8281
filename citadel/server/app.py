"""Run citadel: load or create the CA, then serve gRPC (TLS, optional client certs) and HTTP."""

from __future__ import annotations

import datetime as dt
import logging
import signal
import sys
import threading
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
from prometheus_client import REGISTRY, Info

from api.istio.v1.auth import ca_pb2_grpc
from citadel import storage
from citadel.ca import certs
from citadel.ca.authority import DEFAULT_TTL, CertificateAuthority
from citadel.server import http_endpoint
from citadel.server.metrics import CitadelMetrics
from citadel.server.service import CertificateService
from isthmus.log import event

log = logging.getLogger("citadel")


@dataclass
class CitadelConfig:
    root_dir: Path
    trust_domain: str = "cluster.local"
    plugin_certs: Path | None = None
    max_ttl: float = 2160 * 3600.0
    default_ttl: float = DEFAULT_TTL
    key_type: str = "ec-p256"
    grpc_addr: tuple[str, int] = ("127.0.0.1", 8060)
    # gRPC Python cannot ask for an optional client certificate on one port (it either requires one or
    # never requests one), so renewal over mTLS has its own port where a client certificate is required.
    grpc_mtls_addr: tuple[str, int] | None = ("127.0.0.1", 8062)
    http_addr: tuple[str, int] = ("127.0.0.1", 8061)
    server_dns: tuple[str, ...] = ("localhost",)
    server_ips: tuple[str, ...] = ("127.0.0.1",)
    workers: int = 8


def build_ca(config: CitadelConfig) -> CertificateAuthority:
    if config.plugin_certs:
        material = storage.load_plugin(config.plugin_certs)
        source = f"plug-in CA {config.plugin_certs}"
        storage.ensure_dir(config.root_dir)
        # root-cert.pem in --root-dir is the trust anchor agents read, in either mode
        storage.write_file(
            config.root_dir / storage.ROOT_CERT, certs.to_pem(material.chain[-1]).encode(), 0o644
        )
    else:
        material = storage.load_or_create_root(config.root_dir, config.key_type, config.trust_domain)
        source = "self-signed root (created)" if material.created else "self-signed root (reused)"
    ca = CertificateAuthority(
        material.signing_cert,
        material.signing_key,
        material.chain,
        config.trust_domain,
        config.max_ttl,
        config.default_ttl,
    )
    event(
        log,
        logging.INFO,
        "ca.ready",
        source=source,
        root=ca.root.subject.rfc4514_string(),
        root_expires=ca.root.not_valid_after_utc.isoformat(),
        trust_domain=config.trust_domain,
    )
    return ca


def run(config: CitadelConfig) -> int:
    try:
        ca = build_ca(config)
        token_key = storage.load_or_create_token_key(config.root_dir)
    except (ValueError, OSError) as e:
        event(log, logging.ERROR, "ca.load_failed", error=str(e))
        print(f"citadel: {e}", file=sys.stderr, flush=True)
        return 1
    Info("isthmus_component", "Which Isthmus component this process is").info({"component": "citadel"})
    metrics = CitadelMetrics(REGISTRY)
    metrics.root_cert_expiry.set(ca.root.not_valid_after_utc.timestamp())
    key_pem, chain_pem = ca.server_credentials(config.server_dns, config.server_ips)
    tls = grpc.ssl_server_credentials([(key_pem, chain_pem)])
    mtls = grpc.ssl_server_credentials(
        [(key_pem, chain_pem)], root_certificates=ca.root_pem.encode(), require_client_auth=True
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=config.workers))
    ca_pb2_grpc.add_IstioCertificateServiceServicer_to_server(
        CertificateService(ca, token_key, metrics), server
    )
    grpc_target = f"{config.grpc_addr[0]}:{config.grpc_addr[1]}"
    ready = threading.Event()
    try:
        port = server.add_secure_port(grpc_target, tls)
        if port == 0:
            raise OSError(f"cannot listen on {grpc_target}")
        if config.grpc_mtls_addr:
            mtls_target = f"{config.grpc_mtls_addr[0]}:{config.grpc_mtls_addr[1]}"
            mtls_port = server.add_secure_port(mtls_target, mtls)
            if mtls_port == 0:
                raise OSError(f"cannot listen on {mtls_target}")
        http = http_endpoint.start(config.http_addr, REGISTRY, ready.is_set, lambda: ca.root_pem)
    except (OSError, RuntimeError) as e:
        event(log, logging.ERROR, "server.listen_failed", error=str(e))
        print(f"citadel: {e}", file=sys.stderr, flush=True)
        return 1
    server.start()
    ready.set()
    event(
        log,
        logging.INFO,
        "grpc.listening",
        address=f"{config.grpc_addr[0]}:{port}",
        tls="server, client optional",
    )
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    ready.clear()
    server.stop(grace=2).wait()
    http.shutdown()
    http.server_close()
    event(log, logging.INFO, "server.stopped", at=dt.datetime.now(dt.UTC).isoformat())
    return 0
