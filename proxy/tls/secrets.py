"""The proxy's secrets: static ones from the bootstrap and SDS subscriptions, and who uses them.

``SecretManager.watch(sds_secret_config, path, watcher)`` registers a TLS socket factory's interest in
a secret. A static secret (no ``sds_config``) must exist in ``static_resources.secrets``. An SDS secret
is fetched over ``StreamSecrets`` from the cluster its ``api_config_source`` names (Istio: ``sds-grpc``
with a ``pipe`` address, the agent's Unix socket).

An update is two-phase so that a bad secret costs nothing: every watcher first *prepares* (builds its
new ``SSLContext``; ConfigError rejects the update and the SDS client NACKs it), then all *commit* at
once. Existing connections keep the context they started with.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from envoy.config.core.v3 import base_pb2, config_source_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

from isthmus.log import event
from proxy.config.errors import ConfigError
from proxy.config.supported import reject_unsupported
from proxy.tls.context import check_secret
from proxy.tls.sds_client import SdsClient

log = logging.getLogger("proxy.tls.secrets")

CONFIG_SOURCE_SPEC = {
    "api_config_source": {
        "api_type": True,
        "transport_api_version": True,
        "grpc_services": {"envoy_grpc": {"cluster_name": True}, "timeout": True},
        "set_node_on_first_message_only": True,
    },
    "initial_fetch_timeout": True,
    "resource_api_version": True,
}
_ApiType = config_source_pb2.ApiConfigSource


class SecretWatcher(Protocol):
    def prepare(self, name: str, secret: secret_pb2.Secret) -> Callable[[], None]:
        """Build what the new secret needs (raise ConfigError to reject it); return the commit."""


def cluster_grpc_target(clusters, name: str, path: str) -> str:
    """The gRPC target of a static cluster: ``unix:<path>`` for a pipe address, else ``host:port``."""
    for cluster in clusters:
        if cluster.name == name:
            break
    else:
        raise ConfigError(path, f"cluster '{name}' is not defined in static_resources.clusters")
    if cluster.HasField("transport_socket"):
        raise ConfigError(path, f"cluster '{name}': SDS over TLS is not supported (use a Unix socket)")
    for locality in cluster.load_assignment.endpoints:
        for lb_endpoint in locality.lb_endpoints:
            addr = lb_endpoint.endpoint.address
            if addr.HasField("pipe") and addr.pipe.path:
                return f"unix:{addr.pipe.path}"
            sa = addr.socket_address
            if sa.address and sa.port_value:
                host = f"[{sa.address}]" if ":" in sa.address else sa.address
                return f"{host}:{sa.port_value}"
    raise ConfigError(path, f"cluster '{name}' has no endpoint with a pipe or socket_address")


def sds_target(source: config_source_pb2.ConfigSource, clusters, path: str) -> str:
    """Check an SDS ``ConfigSource`` (what we do not implement is an error) and resolve its target."""
    if source.WhichOneof("config_source_specifier") != "api_config_source":
        kind = source.WhichOneof("config_source_specifier") or "nothing"
        raise ConfigError(path, f"SDS from {kind} is not supported: use api_config_source with GRPC")
    reject_unsupported(source, CONFIG_SOURCE_SPEC, path)
    api = source.api_config_source
    apath = f"{path}.api_config_source"
    if api.api_type != _ApiType.GRPC:
        raise ConfigError(
            f"{apath}.api_type", f"{_ApiType.ApiType.Name(api.api_type)} is not supported for SDS; use GRPC"
        )
    if api.transport_api_version != config_source_pb2.V3:
        raise ConfigError(f"{apath}.transport_api_version", "only V3 is supported")
    if len(api.grpc_services) != 1 or not api.grpc_services[0].HasField("envoy_grpc"):
        raise ConfigError(f"{apath}.grpc_services", "exactly one grpc_service with envoy_grpc is required")
    name = api.grpc_services[0].envoy_grpc.cluster_name
    return cluster_grpc_target(clusters, name, f"{apath}.grpc_services[0].envoy_grpc.cluster_name")


class SecretManager:
    def __init__(
        self,
        static_secrets=(),
        clusters=(),
        node: base_pb2.Node | None = None,
        path: str = "static_resources.secrets",
        client_factory: Callable[..., SdsClient] = SdsClient,
    ) -> None:
        self.secrets: dict[str, secret_pb2.Secret] = {}
        self.static_names: set[str] = set()
        for i, s in enumerate(static_secrets):
            check_secret(s, f"{path}[{i}]")
            if s.name in self.static_names:
                raise ConfigError(f"{path}[{i}].name", f"duplicate secret name '{s.name}'")
            self.secrets[s.name] = s
            self.static_names.add(s.name)
        self.clusters = list(clusters)
        self.node = node
        self.client_factory = client_factory
        self.watchers: dict[str, list[SecretWatcher]] = {}
        self.clients: dict[tuple[str, str], SdsClient] = {}
        self.versions: dict[str, int] = {}
        # For the admin config dump: SDS secret name -> (version_info, last_updated).
        self.dynamic_info: dict[str, tuple[str, float]] = {}
        self.created = time.time()
        self._started = False

    @classmethod
    def from_bootstrap(cls, bootstrap) -> SecretManager:
        sr = bootstrap.static_resources
        node = bootstrap.node if bootstrap.HasField("node") else None
        return cls(sr.secrets, sr.clusters, node)

    def watch(self, sds: secret_pb2.SdsSecretConfig, path: str, watcher: SecretWatcher) -> None:
        """Register `watcher` for the secret; it is prepared+committed at once if the secret is known."""
        name = sds.name
        if not sds.HasField("sds_config"):
            if name not in self.static_names:
                raise ConfigError(
                    f"{path}.name", f"static secret '{name}' is not in static_resources.secrets"
                )
        else:
            target = sds_target(sds.sds_config, self.clusters, f"{path}.sds_config")
            key = (target, name)
            if key not in self.clients:
                self.clients[key] = self.client_factory(
                    target, [name], lambda secrets, n=name, k=key: self.update(n, secrets, self._incoming(k)),
                    node=self.node,
                )  # fmt: skip
                if self._started:
                    self.clients[key].start()
        self.watchers.setdefault(name, []).append(watcher)
        # A watcher added later (a new listener) gets the current secret at once.
        secret = self.secrets.get(name)
        if secret is not None:
            watcher.prepare(name, secret)()

    def unwatch(self, name: str, watcher: SecretWatcher) -> None:
        ws = self.watchers.get(name, [])
        if watcher in ws:
            ws.remove(watcher)

    def _incoming(self, key: tuple[str, str]) -> str:
        client = self.clients.get(key)
        return getattr(getattr(client, "protocol", None), "incoming_version", "") or ""

    def update(self, name: str, secrets: list[secret_pb2.Secret], version_info: str = "") -> None:
        """An SDS response for `name`: prepare every watcher, then commit all (ConfigError: none)."""
        found = [s for s in secrets if s.name == name]
        if not found:
            return  # SotW without our secret: keep what we have (Envoy does not remove on absence)
        secret = found[0]
        commits = [w.prepare(name, secret) for w in list(self.watchers.get(name, []))]
        self.secrets[name] = secret
        self.versions[name] = self.versions.get(name, 0) + 1
        self.dynamic_info[name] = (version_info, time.time())
        for commit in commits:
            commit()
        event(log, logging.INFO, "secret.updated", secret=name, version=self.versions[name],
              watchers=len(commits))  # fmt: skip

    def start(self) -> None:
        """Start the SDS streams (needs a running loop)."""
        self._started = True
        for client in self.clients.values():
            client.start()

    async def stop(self) -> None:
        self._started = False
        await asyncio.gather(*(c.stop() for c in self.clients.values()))
