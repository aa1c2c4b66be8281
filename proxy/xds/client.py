"""The ADS client: one gRPC stream to the control plane, SotW or Delta (I/O around ``protocol``).

``XdsClient`` implements ``api.XdsClientApi``. The protocol rules (versions, nonces, ACK/NACK,
subscriptions, resync) live in ``proxy/xds/protocol.py``; this module only moves messages, runs the
handlers, keeps the stream alive and counts.

* One worker task per type URL calls ``handler.on_update``: a batch is applied fully before the next
  batch of that type, while types do not wait for each other (a CDS handler may wait for endpoints).
* The stream is re-established with jittered exponential back-off (0.5 s .. 30 s, reset once a
  stream delivers a response). The proxy keeps its last good config meanwhile.
* ``initial_fetch_timeout`` per type: if no response arrives in time, ``handler.on_fetch_timeout()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc

from isthmus.log import event
from proxy.stats.store import Scope, Store
from proxy.xds import api
from proxy.xds.backoff import JitteredBackoff
from proxy.xds.config import AdsConfig
from proxy.xds.nack import error_detail
from proxy.xds.protocol import DeltaProtocol, Received, SotwProtocol
from proxy.xds.resources import SHORT_NAMES

log = logging.getLogger(__name__)


class _TypeWorker:
    def __init__(self, handler: api.TypeHandler) -> None:
        self.handler = handler
        self.queue: asyncio.Queue[tuple[int, Received]] = asyncio.Queue()
        self.task: asyncio.Task | None = None
        self.fetch_timer: asyncio.TimerHandle | None = None


class XdsClient:
    def __init__(
        self,
        node: base_pb2.Node,
        config: AdsConfig,
        stats: Store | Scope | None = None,
        backoff: JitteredBackoff | None = None,
    ) -> None:
        self.node = node
        self.config = config
        self.stats = stats if stats is not None else Store()
        self.backoff = backoff or JitteredBackoff()
        proto_cls = DeltaProtocol if config.delta else SotwProtocol
        self.protocol = proto_cls(node, config.set_node_on_first_message_only)
        self.connected = False
        # The client counts control_plane.* only; update stats are the handlers' (see api.py).
        self._connected_gauge = self.stats.gauge("control_plane.connected_state")
        self.stats.gauge("control_plane.pending_requests")  # no rate limiting: always 0
        self.stats.counter("control_plane.rate_limit_enforced")
        self._workers: dict[str, _TypeWorker] = {}
        self._outbox: asyncio.Queue | None = None
        self._generation = 0
        self._run_task: asyncio.Task | None = None
        self._stopping = asyncio.Event()
        self._started = False

    # -- XdsClientApi ------------------------------------------------------------------------------
    def register(self, handler: api.TypeHandler) -> None:
        type_url = handler.type_url
        self.protocol.add_type(type_url, bool(handler.wildcard))
        self._workers[type_url] = _TypeWorker(handler)
        if self._started:
            self._start_worker(type_url)

    def set_interest(self, type_url: str, names: set[str]) -> None:
        """Called from the event loop (handlers do it while applying an update)."""
        worker = self._workers.get(type_url)
        if worker is None:
            raise KeyError(f"no handler registered for {type_url}")
        before = set(self.protocol.types[type_url].names)
        req = self.protocol.set_interest(type_url, set(names))
        if self._started and set(names) - before:
            self._arm_fetch_timer(type_url, restart=True)
        if req is not None:
            self._send(req)

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        for type_url in self._workers:
            self._start_worker(type_url)
        self._run_task = asyncio.create_task(self._run(), name="xds-client")

    async def stop(self) -> None:
        self._stopping.set()
        tasks = [self._run_task] + [w.task for w in self._workers.values()]
        for w in self._workers.values():
            if w.fetch_timer:
                w.fetch_timer.cancel()
        for t in tasks:
            if t is not None:
                t.cancel()
        for t in tasks:
            if t is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
        self._set_connected(False)

    # -- workers -----------------------------------------------------------------------------------
    def _start_worker(self, type_url: str) -> None:
        worker = self._workers[type_url]
        worker.task = asyncio.create_task(self._work(type_url, worker), name=f"xds-{type_url}")
        if self.protocol.types[type_url].interested():
            self._arm_fetch_timer(type_url)

    def _arm_fetch_timer(self, type_url: str, restart: bool = False) -> None:
        worker = self._workers[type_url]
        if worker.fetch_timer is not None:
            if not restart:
                return
            worker.fetch_timer.cancel()
        timeout = getattr(worker.handler, "initial_fetch_timeout", None)
        if timeout is None:
            timeout = self.config.initial_fetch_timeout(type_url)
        if timeout <= 0:
            return
        worker.fetch_timer = asyncio.get_running_loop().call_later(timeout, self._fetch_timed_out, type_url)

    def _fetch_timed_out(self, type_url: str) -> None:
        worker = self._workers[type_url]
        worker.fetch_timer = None
        event(log, logging.WARNING, "xds.initial_fetch_timeout", type=SHORT_NAMES.get(type_url, type_url))
        try:
            worker.handler.on_fetch_timeout()
        except Exception:
            log.exception("on_fetch_timeout failed for %s", type_url)

    async def _work(self, type_url: str, worker: _TypeWorker) -> None:
        while True:
            generation, rx = await worker.queue.get()
            if worker.fetch_timer is not None:
                worker.fetch_timer.cancel()
                worker.fetch_timer = None
            if rx.decode_error is not None:
                # Never reaches on_update; the optional hook lets the handler count update_rejected.
                hook = getattr(worker.handler, "on_decode_error", None)
                if hook is not None:
                    try:
                        hook(rx.decode_error)
                    except Exception:
                        log.exception("on_decode_error failed for %s", type_url)
                req = self.protocol.nack(rx, error_detail(type_url, rx.decode_error))
                self._log_nack(rx, rx.decode_error)
            else:
                try:
                    await worker.handler.on_update(rx.update)
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # noqa: BLE001 - every rejection is NACKed, bugs included
                    if not isinstance(e, api.UpdateRejected | ValueError):
                        log.exception("handler for %s failed", type_url)
                    req = self.protocol.nack(rx, error_detail(type_url, e))
                    self._log_nack(rx, e)
                else:
                    req = self.protocol.ack(rx)
            if req is not None and generation == self._generation:
                self._send(req)

    def _log_nack(self, rx: Received, exc: BaseException) -> None:
        event(
            log,
            logging.WARNING,
            "xds.nack",
            type=SHORT_NAMES.get(rx.type_url, rx.type_url),
            version=rx.version_info,
            nonce=rx.nonce,
            error=str(exc),
        )

    # -- the stream --------------------------------------------------------------------------------
    def _send(self, req) -> None:
        if self._outbox is not None:
            self._outbox.put_nowait(req)

    def _set_connected(self, value: bool) -> None:
        self.connected = value
        self._connected_gauge.set(1 if value else 0)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self._one_stream()
                reason = "stream closed by the control plane"
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as e:
                reason = f"{e.code().name}: {e.details()}"
            except Exception as e:  # noqa: BLE001 - keep reconnecting whatever happened
                log.exception("xDS stream failed")
                reason = repr(e)
            was_connected = self.connected
            self._set_connected(False)
            self.protocol.stream_lost()
            self._outbox = None
            delay = self.backoff.next_delay()
            event(
                log,
                logging.WARNING if was_connected else logging.INFO,
                "xds.disconnected",
                target=self.config.target,
                reason=reason,
                retry_in_s=round(delay, 3),
            )
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def _one_stream(self) -> None:
        self._generation += 1
        outbox: asyncio.Queue = asyncio.Queue()
        self._outbox = outbox
        for req in self.protocol.start_stream():
            outbox.put_nowait(req)

        async def requests():
            while True:
                yield await outbox.get()

        async with grpc.aio.insecure_channel(self.config.target) as channel:
            stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
            method = stub.DeltaAggregatedResources if self.config.delta else stub.StreamAggregatedResources
            call = method(requests())
            generation = self._generation
            async for resp in call:
                if not self.connected:
                    self._set_connected(True)
                    self.backoff.reset()
                    event(log, logging.INFO, "xds.connected", target=self.config.target)
                rx = self.protocol.on_response(resp)
                worker = self._workers.get(rx.type_url)
                if worker is None:
                    # A type nobody asked for: NACK it so the server knows.
                    self._send(self.protocol.nack(rx, error_detail(rx.type_url, rx.decode_error)))
                    continue
                worker.queue.put_nowait((generation, rx))
