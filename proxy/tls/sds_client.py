"""SDS client: ``envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets`` (state of the world).

``SdsProtocol`` is the pure part: the requests to send and what a response means (ACK echoing version
and nonce, or NACK with ``error_detail`` keeping the last accepted version). ``SdsClient`` runs one
stream per secret name, as Envoy does, reconnecting with jittered back-off, and hands every accepted
batch to ``on_update(secrets)``; when that raises ConfigError the response is NACKed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc
from google.rpc import status_pb2

from isthmus.log import event
from proxy.config.errors import ConfigError
from proxy.tls.context import check_secret
from proxy.xds.backoff import JitteredBackoff

log = logging.getLogger("proxy.tls.sds")

SECRET_TYPE_URL = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
INVALID_ARGUMENT = 3


class SdsProtocol:
    """The request/response bookkeeping of one SotW SDS stream (pure)."""

    def __init__(self, names: list[str], node: base_pb2.Node | None = None) -> None:
        self.names = list(names)
        self.node = node
        self.version = ""  # last accepted version_info
        self.accepted = 0
        self.rejected = 0
        self.last_error = ""
        self.incoming_version = ""

    def initial_request(self) -> discovery_pb2.DiscoveryRequest:
        """First request of a (re)connected stream; carries the node and our last accepted version."""
        req = discovery_pb2.DiscoveryRequest(
            type_url=SECRET_TYPE_URL, resource_names=self.names, version_info=self.version
        )
        if self.node is not None:
            req.node.CopyFrom(self.node)
        return req

    def decode(self, response: discovery_pb2.DiscoveryResponse) -> list[secret_pb2.Secret]:
        if response.type_url != SECRET_TYPE_URL:
            raise ConfigError("type_url", f"expected {SECRET_TYPE_URL}, got '{response.type_url}'")
        out = []
        for i, packed in enumerate(response.resources):
            path = f"resources[{i}]"
            if packed.type_url != SECRET_TYPE_URL:
                raise ConfigError(path, f"resource type '{packed.type_url}' is not a Secret")
            secret = secret_pb2.Secret()
            if not packed.Unpack(secret):
                raise ConfigError(path, "cannot decode the Secret")
            check_secret(secret, f"{path}(Secret '{secret.name}')")
            if secret.name not in self.names:
                raise ConfigError(f"{path}.name", f"secret '{secret.name}' was not requested")
            out.append(secret)
        return out

    def handle(
        self, response: discovery_pb2.DiscoveryResponse, on_update: Callable[[list[secret_pb2.Secret]], None]
    ) -> discovery_pb2.DiscoveryRequest:
        """Decode, apply, and return the ACK or NACK to send."""
        self.incoming_version = response.version_info  # what on_update applies (config dump)
        try:
            secrets = self.decode(response)
            on_update(secrets)
        except ConfigError as e:
            self.rejected += 1
            self.last_error = str(e)
            return discovery_pb2.DiscoveryRequest(
                type_url=SECRET_TYPE_URL,
                resource_names=self.names,
                version_info=self.version,
                response_nonce=response.nonce,
                error_detail=status_pb2.Status(code=INVALID_ARGUMENT, message=str(e)),
            )
        self.accepted += 1
        self.version = response.version_info
        self.last_error = ""
        return discovery_pb2.DiscoveryRequest(
            type_url=SECRET_TYPE_URL,
            resource_names=self.names,
            version_info=self.version,
            response_nonce=response.nonce,
        )


class SdsClient:
    """One StreamSecrets subscription to `target` (a gRPC target: ``unix:/path`` or ``host:port``)."""

    def __init__(
        self,
        target: str,
        names: list[str],
        on_update: Callable[[list[secret_pb2.Secret]], None],
        node: base_pb2.Node | None = None,
        backoff: JitteredBackoff | None = None,
    ) -> None:
        self.target = target
        self.protocol = SdsProtocol(names, node)
        self.on_update = on_update
        self.backoff = backoff or JitteredBackoff(base=0.25, maximum=5.0)
        self.connected = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def run(self) -> None:
        while True:
            try:
                await self._stream_once()
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as e:
                event(log, logging.WARNING, "sds.stream_failed", target=self.target,
                      names=",".join(self.protocol.names), code=e.code().name, error=e.details())  # fmt: skip
            except Exception as e:  # noqa: BLE001 - keep the last good secret and reconnect
                event(log, logging.WARNING, "sds.stream_failed", target=self.target, error=repr(e))
            self.connected.clear()
            await asyncio.sleep(self.backoff.next_delay())

    async def _stream_once(self) -> None:
        requests: asyncio.Queue = asyncio.Queue()
        requests.put_nowait(self.protocol.initial_request())

        async def outgoing():
            while True:
                req = await requests.get()
                if req is None:
                    return
                yield req

        async with grpc.aio.insecure_channel(self.target) as channel:
            call = sds_pb2_grpc.SecretDiscoveryServiceStub(channel).StreamSecrets(outgoing())
            try:
                async for response in call:
                    self.connected.set()
                    self.backoff.reset()
                    reply = self.protocol.handle(response, self.on_update)
                    if reply.HasField("error_detail"):
                        event(log, logging.WARNING, "sds.nack", names=",".join(self.protocol.names),
                              version=response.version_info, error=reply.error_detail.message)  # fmt: skip
                    else:
                        event(log, logging.INFO, "sds.ack", names=",".join(self.protocol.names),
                              version=response.version_info)  # fmt: skip
                    requests.put_nowait(reply)
            finally:
                requests.put_nowait(None)
                call.cancel()
