"""envoy.service.secret.v3.SecretDiscoveryService for the agent's own proxy, on a Unix socket.

StreamSecrets (state of the world), DeltaSecrets (incremental) and FetchSecrets. Each stream gets the
resources it names (`default`, `ROOTCA`) as soon as a certificate exists, then again on every rotation,
without reconnecting. ACKs and NACKs follow xDS: a request echoing our latest nonce acknowledges it, one
with `error_detail` rejects it (logged; the proxy keeps its last good secret, and we do not resend it).
"""

from __future__ import annotations

import asyncio
import itertools
import logging

import grpc
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc

from isthmus.log import event
from proxy.agent import secrets
from proxy.agent.cert_manager import CertManager
from proxy.agent.secrets import SECRET_TYPE_URL, CertState

log = logging.getLogger("proxy.agent.sds")


class SecretDiscovery(sds_pb2_grpc.SecretDiscoveryServiceServicer):
    def __init__(self, certs: CertManager) -> None:
        self.certs = certs
        self._nonces = itertools.count(1)

    def _known(self, names, peer: str) -> list[str]:
        unknown = [n for n in names if n not in secrets.NAMES]
        if unknown:
            event(log, logging.WARNING, "sds.unknown_resource", names=",".join(unknown), peer=peer,
                  known=",".join(secrets.NAMES))  # fmt: skip
        return [n for n in secrets.NAMES if n in names]

    async def _merged(self, request_iterator, queue: asyncio.Queue):
        async def read():
            try:
                async for request in request_iterator:
                    await queue.put(request)
            finally:
                await queue.put(None)

        async def watch():
            version = 0
            while True:
                state = await self.certs.wait_newer(version)
                version = state.version
                await queue.put(state)

        return [asyncio.create_task(read()), asyncio.create_task(watch())]

    def _check_type(self, type_url: str, context) -> None:
        if type_url and type_url != SECRET_TYPE_URL:
            raise ValueError(f"this SDS server serves only {SECRET_TYPE_URL}, not {type_url}")

    async def StreamSecrets(self, request_iterator, context):  # noqa: N802 (gRPC's naming)
        queue: asyncio.Queue = asyncio.Queue()
        tasks = await self._merged(request_iterator, queue)
        peer = context.peer() or "proxy"
        names: list[str] = []
        sent_version, last_nonce, subscribed = 0, None, False
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                send = False
                if isinstance(item, CertState):
                    send = subscribed and item.version > sent_version
                else:
                    try:
                        self._check_type(item.type_url, context)
                    except ValueError as e:
                        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
                    if item.response_nonce and item.response_nonce != last_nonce:
                        continue  # a reply to an older response; the newer one is what counts
                    if item.error_detail.code:
                        event(log, logging.WARNING, "sds.nack", version=item.version_info, nonce=item.response_nonce,
                              error=item.error_detail.message, peer=peer)  # fmt: skip
                    elif item.response_nonce:
                        event(log, logging.DEBUG, "sds.ack", version=item.version_info, peer=peer)
                    wanted = self._known(item.resource_names, peer)
                    send = (not subscribed or wanted != names) and self.certs.state is not None
                    names, subscribed = wanted, True
                state = self.certs.state
                if send and state is not None:
                    last_nonce = str(next(self._nonces))
                    sent_version = state.version
                    yield discovery_pb2.DiscoveryResponse(
                        version_info=str(state.version),
                        resources=[secrets.packed(n, state) for n in names],
                        type_url=SECRET_TYPE_URL,
                        nonce=last_nonce,
                    )
                    event(
                        log,
                        logging.INFO,
                        "sds.push",
                        version=state.version,
                        resources=",".join(names),
                        peer=peer,
                    )
        finally:
            for task in tasks:
                task.cancel()

    async def DeltaSecrets(self, request_iterator, context):  # noqa: N802
        queue: asyncio.Queue = asyncio.Queue()
        tasks = await self._merged(request_iterator, queue)
        peer = context.peer() or "proxy"
        subscribed: set[str] = set()
        have: dict[str, str] = {}  # name -> version the client holds
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                if not isinstance(item, CertState):
                    try:
                        self._check_type(item.type_url, context)
                    except ValueError as e:
                        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
                    if item.error_detail.code:
                        event(log, logging.WARNING, "sds.nack", nonce=item.response_nonce,
                              error=item.error_detail.message, peer=peer)  # fmt: skip
                    have.update(item.initial_resource_versions)
                    subscribed |= set(self._known(item.resource_names_subscribe, peer))
                    subscribed -= set(item.resource_names_unsubscribe)
                state = self.certs.state
                if state is None:
                    continue
                version = str(state.version)
                due = [n for n in secrets.NAMES if n in subscribed and have.get(n) != version]
                if not due:
                    continue
                for name in due:
                    have[name] = version
                yield discovery_pb2.DeltaDiscoveryResponse(
                    system_version_info=version,
                    resources=[
                        discovery_pb2.Resource(name=n, version=version, resource=secrets.packed(n, state))
                        for n in due
                    ],
                    type_url=SECRET_TYPE_URL,
                    nonce=str(next(self._nonces)),
                )
        finally:
            for task in tasks:
                task.cancel()

    async def FetchSecrets(self, request, context):  # noqa: N802
        try:
            self._check_type(request.type_url, context)
        except ValueError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        try:
            state = await asyncio.wait_for(self.certs.wait_newer(0), timeout=context.time_remaining() or 10)
        except TimeoutError:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "no certificate from citadel yet")
        names = self._known(request.resource_names, context.peer() or "proxy")
        return discovery_pb2.DiscoveryResponse(
            version_info=str(state.version),
            resources=[secrets.packed(n, state) for n in names],
            type_url=SECRET_TYPE_URL,
            nonce=str(next(self._nonces)),
        )
