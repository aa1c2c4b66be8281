"""Run the agent until SIGINT/SIGTERM: the certificate manager, the SDS server on a Unix socket and, unless
``proxy`` is None (``--no-proxy``), the proxy itself: write its bootstrap, wait for the first certificate
(at most ``cert_wait`` seconds, then start anyway so plaintext-only configs work), start and supervise it,
serve the status port, and on the first signal drain it, stop it, and exit. A second signal kills it."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
from envoy.service.secret.v3 import sds_pb2_grpc

from isthmus.log import event
from proxy.agent import bootstrap as bootstrap_builder
from proxy.agent import csr, sds_path
from proxy.agent.cert_manager import CertManager
from proxy.agent.citadel_client import CitadelClient
from proxy.agent.process import HttpProxyAdmin, SubprocessLauncher, proxy_command
from proxy.agent.rotation import RotationPolicy
from proxy.agent.sds_server import SecretDiscovery
from proxy.agent.status import StatusServer
from proxy.agent.supervisor import RestartBackoff, Supervisor

log = logging.getLogger("proxy.agent")


@dataclass
class ProxyConfig:
    """What the agent needs to run the proxy; `bootstrap` describes the node and its ports."""

    bootstrap: bootstrap_builder.BootstrapOptions
    bootstrap_path: Path
    status_port: int = 15021
    drain_duration: float = 5.0
    cert_wait: float = 10.0
    log_level: str | None = None
    restart_initial: float = 0.2
    restart_max: float = 30.0


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
    proxy: ProxyConfig | None = None


def write_bootstrap(proxy: ProxyConfig) -> dict:
    """Build the bootstrap and write it (atomically) where the proxy will read it."""
    data = bootstrap_builder.build_bootstrap(proxy.bootstrap)
    proxy.bootstrap_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = proxy.bootstrap_path.with_name(proxy.bootstrap_path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, proxy.bootstrap_path)
    return data


async def _first_certificate(certs: CertManager, timeout: float, stop: asyncio.Event) -> None:
    """Istio's order: the proxy starts once its certificate is there, or after `timeout` regardless."""
    waiter = asyncio.ensure_future(certs.wait_newer(0))
    stopper = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait({waiter, stopper}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    stopper.cancel()
    if waiter in done:
        event(log, logging.INFO, "proxy.cert_ready", version=certs.state.version if certs.state else 0)
    elif not stop.is_set():
        event(log, logging.WARNING, "proxy.cert_wait_timeout", waited=f"{timeout:g}s",
              note="starting the proxy without a certificate; TLS listeners and clusters wait for SDS")  # fmt: skip


def socket_plan(config: AgentConfig) -> sds_path.SocketPlan:
    """Where SDS is served (see proxy.agent.sds_path): the requested path when it fits in a Unix socket
    address, else a shorter name for it; the proxy's bootstrap names the same place."""
    plan = sds_path.prepare(sds_path.choose(config.sds_socket, Path.cwd(), sds_path.private_bases()))
    if config.proxy is not None:
        config.proxy.bootstrap = replace(config.proxy.bootstrap, sds_socket=plan.path)
    return plan


async def serve(config: AgentConfig) -> int:
    spiffe_uri = csr.spiffe_id(config.trust_domain, config.namespace, config.service_account)
    try:
        plan = socket_plan(config)
    except (sds_path.SocketPathError, OSError) as e:
        print(f"agent: {e}", flush=True)
        return 1
    if plan.kind != sds_path.NATURAL:
        event(log, logging.INFO, "sds.socket_relocated", requested=str(plan.requested), socket=plan.path,
              reason=f"longer than {sds_path.MAX_PATH_BYTES} bytes")  # fmt: skip
    client = CitadelClient(config.citadel, config.root_cert, config.token_file, config.citadel_mtls)
    certs = CertManager(client, spiffe_uri, config.cert_ttl, RotationPolicy(retry_max=config.retry_max),
                        config.key_type)  # fmt: skip
    if config.proxy is not None:
        write_bootstrap(config.proxy)
        event(log, logging.INFO, "bootstrap.written", path=str(config.proxy.bootstrap_path),
              node=bootstrap_builder.node_id(config.proxy.bootstrap))  # fmt: skip
    server = grpc.aio.server()
    sds_pb2_grpc.add_SecretDiscoveryServiceServicer_to_server(SecretDiscovery(certs), server)
    if server.add_insecure_port(f"unix:{plan.path}") == 0:
        print(f"agent: cannot listen on unix:{plan.path}", flush=True)
        sds_path.release(plan)
        return 1
    os.chmod(plan.path, 0o600)
    await server.start()
    event(log, logging.INFO, "sds.listening", socket=plan.path, spiffe_id=spiffe_uri)

    stop = asyncio.Event()
    supervisor: Supervisor | None = None

    def on_signal() -> None:
        if stop.is_set() and supervisor is not None:
            event(log, logging.WARNING, "proxy.kill", reason="second signal")
            supervisor.kill(signal.SIGKILL)
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    rotation = asyncio.create_task(certs.run())
    status_server: StatusServer | None = None
    supervising: asyncio.Task | None = None
    code = 0
    if config.proxy is not None:
        pc = config.proxy
        opts = pc.bootstrap
        supervisor = Supervisor(
            SubprocessLauncher(proxy_command(pc.bootstrap_path, pc.drain_duration, pc.log_level)),
            HttpProxyAdmin(opts.ip, opts.admin_port),
            pc.drain_duration,
            inbound_only_drain=opts.proxy_type == bootstrap_builder.SIDECAR,
            backoff=RestartBackoff(initial=pc.restart_initial, maximum=pc.restart_max),
        )
        sup = supervisor

        def status() -> dict:
            state = certs.state
            return {
                **sup.snapshot(),
                "node": bootstrap_builder.node_id(opts),
                "cert_version": state.version if state else 0,
                "cert_not_after": int(state.not_after) if state else None,
            }

        status_server = StatusServer(opts.ip, pc.status_port, sup.ready, status)
        try:
            await status_server.start()
        except OSError as e:
            print(f"agent: cannot listen on {opts.ip}:{pc.status_port}: {e.strerror or e}", flush=True)
            status_server, code = None, 1
            stop.set()
        else:
            event(log, logging.INFO, "status.listening", address=f"{opts.ip}:{pc.status_port}")
            await _first_certificate(certs, pc.cert_wait, stop)
            if not stop.is_set():
                supervising = asyncio.create_task(sup.run())
    await stop.wait()
    event(log, logging.INFO, "agent.stopping")
    if supervisor is not None:
        await supervisor.drain_and_stop()
    if supervising is not None:
        await supervising
    if status_server is not None:
        await status_server.stop()
    rotation.cancel()
    await server.stop(grace=1)
    sds_path.release(plan)
    event(log, logging.INFO, "agent.stopped")
    return code


def run(config: AgentConfig) -> int:
    return asyncio.run(serve(config))
