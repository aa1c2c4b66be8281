"""A real xDS control plane for tests: grpcio + xds-protos, SotW and Delta ADS.

In-process (it runs its own asyncio loop in a background thread, so sync and async tests can use it):

    server = XdsServer().start()                       # port 0: the kernel picks; server.port
    server.set_resources(CLUSTER, {"backend": cluster})   # replaces the whole set for that type
    server.wait_for_request(lambda r: r.type_url == CLUSTER and r.response_nonce)  # an ACK
    server.stop(); server.start()                      # restart on the same port
    server.stop()

As a process (``python -m tests.support.xds_server --port P --resources FILE``) it serves the resources
in FILE, a YAML or JSON document ``{resources: [<Any as JSON, with "@type">, ...]}``; SIGHUP reloads it.

Behaviour, as a control plane should: every set_resources bumps that type's version (``"1"``, ``"2"``,
...) and pushes to the streams subscribed to it. SotW responses carry the full set for wildcard types
and the subscribed names otherwise. Delta responses carry only resources whose version (a hash of their
bytes) the client does not have, plus ``removed_resources``; ``initial_resource_versions`` on a new
stream is honoured. Every request and response is recorded (``server.requests``, ``server.responses``).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2, json_format
from google.protobuf.message import Message

# Resource types and the extensions that commonly appear in their typed_config, so JSON with "@type"
# resolves (xds-protos registers a type only once its module is imported).
from proxy.xds import api
from proxy.xds.resources import MESSAGE_TYPES, resource_name

WILDCARD_TYPES = {api.LISTENER, api.CLUSTER}


def _import_extensions() -> None:
    import importlib

    for mod in (
        "envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2",
        "envoy.extensions.filters.network.tcp_proxy.v3.tcp_proxy_pb2",
        "envoy.extensions.filters.http.router.v3.router_pb2",
        "envoy.extensions.filters.http.fault.v3.fault_pb2",
        "envoy.extensions.transport_sockets.tls.v3.tls_pb2",
        "envoy.extensions.filters.listener.original_dst.v3.original_dst_pb2",
        "envoy.extensions.filters.listener.tls_inspector.v3.tls_inspector_pb2",
        "envoy.extensions.filters.listener.http_inspector.v3.http_inspector_pb2",
        "envoy.extensions.access_loggers.file.v3.file_pb2",
        "envoy.extensions.access_loggers.stream.v3.stream_pb2",
    ):
        try:
            importlib.import_module(mod)
        except ImportError:
            pass


_import_extensions()


@dataclass
class Recorded:
    """One message on one stream. `kind` is "sotw" or "delta"; `message` is the request/response."""

    stream_id: int
    kind: str
    message: Message
    at: float = field(default_factory=time.monotonic)

    @property
    def type_url(self) -> str:
        return self.message.type_url

    @property
    def response_nonce(self) -> str:
        return getattr(self.message, "response_nonce", "")

    @property
    def version_info(self) -> str:
        return getattr(self.message, "version_info", "")

    @property
    def is_nack(self) -> bool:
        return self.message.HasField("error_detail") if hasattr(self.message, "error_detail") else False

    @property
    def resource_count(self) -> int:
        return len(self.message.resources) if hasattr(self.message, "resources") else 0

    @property
    def byte_size(self) -> int:
        return self.message.ByteSize()


def _version_of(msg: Message) -> str:
    return hashlib.sha256(msg.SerializeToString(deterministic=True)).hexdigest()[:16]


class _Stream:
    """Server-side state of one ADS stream (runs on the server loop)."""

    def __init__(self, server: XdsServer, stream_id: int, delta: bool) -> None:
        self.server = server
        self.id = stream_id
        self.delta = delta
        self.out: asyncio.Queue = asyncio.Queue()
        # type_url -> subscribed names; None = wildcard
        self.subs: dict[str, set[str] | None] = {}
        self.sent_nonce: dict[str, str] = {}
        self.sent_version: dict[str, str] = {}  # SotW
        self.client_has: dict[str, dict[str, str]] = {}  # Delta: name -> version the client has

    def _nonce(self) -> str:
        return str(next(self.server._nonces))

    def _selected(self, type_url: str) -> dict[str, tuple[str, Message]]:
        everything = self.server._resources.get(type_url, {})
        names = self.subs.get(type_url)
        if names is None:
            return dict(everything)
        return {n: everything[n] for n in names if n in everything}

    def _sotw_push(self, type_url: str) -> None:
        selected = self._selected(type_url)
        version = str(self.server._versions.get(type_url, 0))
        resp = discovery_pb2.DiscoveryResponse(type_url=type_url, version_info=version, nonce=self._nonce())
        for _, (_, msg) in sorted(selected.items()):
            packed = any_pb2.Any()
            packed.Pack(msg)
            resp.resources.append(packed)
        self.sent_nonce[type_url] = resp.nonce
        self.sent_version[type_url] = version
        self._send(resp)

    def _delta_push(self, type_url: str, force: bool = False) -> None:
        selected = self._selected(type_url)
        has = self.client_has.setdefault(type_url, {})
        resp = discovery_pb2.DeltaDiscoveryResponse(
            type_url=type_url, system_version_info=str(self.server._versions.get(type_url, 0))
        )
        for name, (version, msg) in sorted(selected.items()):
            if has.get(name) != version:
                packed = any_pb2.Any()
                packed.Pack(msg)
                resp.resources.append(discovery_pb2.Resource(name=name, version=version, resource=packed))
                has[name] = version
        everything = self.server._resources.get(type_url, {})
        subscribed = self.subs.get(type_url)
        for name in sorted(has):
            if name not in everything and (subscribed is None or name in subscribed):
                resp.removed_resources.append(name)
        for name in resp.removed_resources:
            del has[name]
        if not resp.resources and not resp.removed_resources and not force:
            return
        resp.nonce = self._nonce()
        self.sent_nonce[type_url] = resp.nonce
        self._send(resp)

    def _send(self, resp: Message) -> None:
        self.server._record(self.server.responses, Recorded(self.id, "delta" if self.delta else "sotw", resp))
        self.out.put_nowait(resp)

    def push(self, type_url: str) -> None:
        if type_url not in self.subs:
            return
        if self.delta:
            self._delta_push(type_url)
        else:
            self._sotw_push(type_url)

    def on_sotw_request(self, req: discovery_pb2.DiscoveryRequest) -> None:
        t = req.type_url
        first = t not in self.subs
        if req.response_nonce and req.response_nonce != self.sent_nonce.get(t):
            return  # stale: answers an older response (xDS spec: ignore)
        if first:
            legacy_wildcard = not req.resource_names
            self.subs[t] = None if legacy_wildcard or "*" in req.resource_names else set(req.resource_names)
            self._sotw_push(t)
            return
        if req.HasField("error_detail"):
            return  # NACK: keep the client where it is
        if self.subs[t] is not None:
            names = set(req.resource_names)
            if names != self.subs[t]:
                self.subs[t] = names
                self._sotw_push(t)

    def on_delta_request(self, req: discovery_pb2.DeltaDiscoveryRequest) -> None:
        t = req.type_url
        first = t not in self.subs
        if first:
            subscribe = set(req.resource_names_subscribe)
            wildcard = "*" in subscribe or (not subscribe and t in WILDCARD_TYPES)
            self.subs[t] = None if wildcard else subscribe - {"*"}
            self.client_has[t] = dict(req.initial_resource_versions)
            self._delta_push(t, force=True)
            return
        if req.HasField("error_detail"):
            return  # NACK: the client keeps its last good config; nothing to resend
        if not req.resource_names_subscribe and not req.resource_names_unsubscribe:
            return  # an ACK
        subs = self.subs[t]
        changed = False
        if subs is not None:
            for name in req.resource_names_unsubscribe:
                subs.discard(name)
                self.client_has.get(t, {}).pop(name, None)
                changed = True
            for name in req.resource_names_subscribe:
                if name == "*":
                    self.subs[t] = None
                else:
                    subs.add(name)
                    # a re-subscription is answered even if the client had the resource
                    self.client_has.get(t, {}).pop(name, None)
                changed = True
        if changed:
            self._delta_push(t)


class _Servicer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    def __init__(self, server: XdsServer) -> None:
        self.server = server

    async def _serve(self, request_iterator, context, delta: bool):
        stream = _Stream(self.server, next(self.server._stream_ids), delta)
        self.server._streams.add(stream)
        kind = "delta" if delta else "sotw"

        async def read() -> None:
            try:
                async for req in request_iterator:
                    self.server._record(self.server.requests, Recorded(stream.id, kind, req))
                    with self.server._lock:
                        if delta:
                            stream.on_delta_request(req)
                        else:
                            stream.on_sotw_request(req)
            finally:
                stream.out.put_nowait(None)

        reader = asyncio.ensure_future(read())
        try:
            while True:
                resp = await stream.out.get()
                if resp is None:
                    return
                yield resp
        finally:
            reader.cancel()
            self.server._streams.discard(stream)

    # grpc.aio recognises a streaming handler by its being an async generator function.
    async def StreamAggregatedResources(self, request_iterator, context):
        async for resp in self._serve(request_iterator, context, delta=False):
            yield resp

    async def DeltaAggregatedResources(self, request_iterator, context):
        async for resp in self._serve(request_iterator, context, delta=True):
            yield resp


class XdsServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.requests: list[Recorded] = []
        self.responses: list[Recorded] = []
        self._resources: dict[str, dict[str, tuple[str, Message]]] = {}
        self._versions: dict[str, int] = {}
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._nonces = itertools.count(1)
        self._stream_ids = itertools.count(1)
        self._streams: set[_Stream] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._grpc: grpc.aio.Server | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> XdsServer:
        if self._thread is not None:
            raise RuntimeError("already running")
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._start_grpc())
            except BaseException as e:  # noqa: BLE001 - reported to start()'s caller
                errors.append(e)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name="xds-server", daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            self._thread.join()
            self._thread = None
            raise errors[0]
        return self

    async def _start_grpc(self) -> None:
        self._grpc = grpc.aio.server()
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(_Servicer(self), self._grpc)
        bound = self._grpc.add_insecure_port(f"{self.host}:{self.port}")
        if bound == 0:
            raise OSError(f"cannot bind {self.host}:{self.port}")
        self.port = bound
        await self._grpc.start()

    def stop(self) -> None:
        """Stop at once: open streams end (the clients see the control plane go away)."""
        if self._thread is None:
            return
        loop = self._loop
        fut = asyncio.run_coroutine_threadsafe(self._grpc.stop(grace=None), loop)
        fut.result(10)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(10)
        self._thread = None
        self._grpc = None
        with self._lock:
            self._streams.clear()

    def __enter__(self) -> XdsServer:
        return self if self._thread else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    # -- resources ---------------------------------------------------------------------------------
    def set_resources(self, type_url: str, resources: dict[str, Message] | list[Message]) -> str:
        """Replace every resource of `type_url`; bump its version; push. Returns the new version."""
        if isinstance(resources, list):
            resources = {resource_name(m): m for m in resources}
        cls = MESSAGE_TYPES[type_url]
        for name, msg in resources.items():
            if not isinstance(msg, cls):
                raise TypeError(f"{name}: expected {cls.DESCRIPTOR.full_name}, got {type(msg).__name__}")
        with self._lock:
            self._resources[type_url] = {n: (_version_of(m), m) for n, m in resources.items()}
            self._versions[type_url] = self._versions.get(type_url, 0) + 1
            version = str(self._versions[type_url])
        self._push(type_url)
        return version

    def update_resources(
        self, type_url: str, upsert: dict[str, Message] | None = None, remove: set[str] | None = None
    ) -> str:
        with self._lock:
            current = {n: m for n, (_, m) in self._resources.get(type_url, {}).items()}
        current.update(upsert or {})
        for name in remove or ():
            current.pop(name, None)
        return self.set_resources(type_url, current)

    def version(self, type_url: str) -> str:
        with self._lock:
            return str(self._versions.get(type_url, 0))

    def _push(self, type_url: str) -> None:
        """Push to every subscribed stream; returns once the responses are queued and recorded."""
        loop = self._loop
        if self._thread is None or loop is None:
            return

        def push_all() -> None:
            with self._lock:
                for stream in list(self._streams):
                    stream.push(type_url)

        if threading.current_thread() is self._thread:
            push_all()
            return
        done = threading.Event()

        def run() -> None:
            try:
                push_all()
            finally:
                done.set()

        loop.call_soon_threadsafe(run)
        done.wait(10)

    # -- recording ---------------------------------------------------------------------------------
    def _record(self, where: list[Recorded], rec: Recorded) -> None:
        with self._cond:
            where.append(rec)
            self._cond.notify_all()

    def wait_for_request(self, predicate: Callable[[Recorded], bool], timeout: float = 10.0) -> Recorded:
        return self._wait(self.requests, predicate, timeout)

    def wait_for_response(self, predicate: Callable[[Recorded], bool], timeout: float = 10.0) -> Recorded:
        return self._wait(self.responses, predicate, timeout)

    async def await_request(self, predicate: Callable[[Recorded], bool], timeout: float = 10.0) -> Recorded:
        return await asyncio.to_thread(self.wait_for_request, predicate, timeout)

    def _wait(self, where: list[Recorded], predicate, timeout: float) -> Recorded:
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for rec in where[seen:]:
                    if predicate(rec):
                        return rec
                seen = len(where)
                left = deadline - time.monotonic()
                if left <= 0:
                    kinds = [
                        (r.type_url.rsplit(".", 1)[-1], r.response_nonce, r.is_nack) for r in where[-10:]
                    ]
                    raise TimeoutError(f"no matching message within {timeout}s; last seen: {kinds}")
                self._cond.wait(left)

    def acks(self, type_url: str) -> list[Recorded]:
        """Requests for `type_url` that answer a response without error_detail."""
        with self._lock:
            return [r for r in self.requests if r.type_url == type_url and r.response_nonce and not r.is_nack]

    def nacks(self, type_url: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.type_url == type_url and r.is_nack]

    def clear_records(self) -> None:
        with self._lock:
            self.requests.clear()
            self.responses.clear()


# -- process mode ---------------------------------------------------------------------------------
def load_resources_file(path: Path) -> dict[str, dict[str, Message]]:
    """``{resources: [<Any JSON with "@type">]}`` (YAML or JSON) -> {type_url: {name: message}}."""
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        doc = yaml.safe_load(text) or {}
    else:
        doc = json.loads(text or "{}")
    out: dict[str, dict[str, Message]] = {t: {} for t in MESSAGE_TYPES}
    for i, item in enumerate(doc.get("resources", [])):
        type_url = item.get("@type", "")
        cls = MESSAGE_TYPES.get(type_url)
        if cls is None:
            raise ValueError(f"{path}: resources[{i}]: unsupported @type {type_url!r}")
        msg = cls()
        body = {k: v for k, v in item.items() if k != "@type"}
        json_format.ParseDict(body, msg)
        out[type_url][resource_name(msg)] = msg
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A test xDS control plane (SotW and Delta ADS).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--resources", type=Path, help="YAML/JSON {resources: [...]}; SIGHUP reloads")
    args = parser.parse_args(argv)

    server = XdsServer(args.host, args.port)

    def load() -> None:
        if args.resources:
            for type_url, resources in load_resources_file(args.resources).items():
                server.set_resources(type_url, resources)

    load()
    server.start()
    print(f"xds-server listening on {server.address}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, lambda *_: load())
    while not stop.wait(0.5):
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
