"""StreamAccessLogs queues each message's batch and ingests the queue at once (after a short delay, at a
maximum size, and when a stream ends): against the handler that ingested every message as it came (the
oracle here), the same entries reach the same nodes in the same order, and a real Telemetry ends with
the same samples."""

from __future__ import annotations

import asyncio
import random

from envoy.config.core.v3 import base_pb2
from envoy.service.accesslog.v3 import als_pb2
from prometheus_client import CollectorRegistry

from mixer.config.model import MixerConfig
from mixer.server.accesslog import AccessLogService
from mixer.server.app import Telemetry
from mixer.server.metrics import MixerMetrics
from mixer.telemetry.alsview import StreamAccessLogsView
from tests.unit.mixer.telemetry.test_ingest import http_entries, samples, tcp_entries


class RecordingSink:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, list[bytes]]] = []

    def http(self, node, entries) -> None:
        self.calls.append(("http", node.workload, [e.SerializeToString() for e in entries]))

    def tcp(self, node, entries) -> None:
        self.calls.append(("tcp", node.workload, [e.SerializeToString() for e in entries]))

    def entries(self) -> list[tuple[str, str, bytes]]:
        return [(kind, node, e) for kind, node, batch in self.calls for e in batch]


def message(node_name: str | None, http=(), tcp=()) -> StreamAccessLogsView:
    m = als_pb2.StreamAccessLogsMessage()
    if node_name is not None:
        m.identifier.node.CopyFrom(base_pb2.Node(id=f"sidecar~127.0.0.1~{node_name}.default~x"))
        m.identifier.node.metadata.update({"WORKLOAD_NAME": node_name, "NAMESPACE": "default"})
    if http:
        m.http_logs.log_entry.extend(http)
    if tcp:
        m.tcp_logs.log_entry.extend(tcp)
    return StreamAccessLogsView.FromString(m.SerializeToString())


def streams(rng: random.Random) -> list[list[StreamAccessLogsView]]:
    http, tcp = http_entries(rng, 300), tcp_entries(rng, 40)
    out = []
    for s, name in enumerate(("reviews-v2", "productpage-v1", "ratings-v1")):
        msgs = [message(name, http[s * 10 : s * 10 + 7])]
        for i in range(12):
            k = rng.randrange(0, 9)
            start = 30 + (s * 12 + i) * 7
            if s == 2 and i % 3 == 0:
                msgs.append(message(None, tcp=tcp[i : i + 3]))
            else:
                msgs.append(message(None, http[start : start + k]))  # k may be 0: an empty message
        out.append(msgs)
    return out


class PerMessageService(AccessLogService):
    """The previous handler: each message's batch to the sink as it arrives."""

    def __init__(self, sink, metrics) -> None:
        super().__init__(sink, metrics, max_pending=1)


async def feed(service, messages, pause: float = 0.0):
    async def it():
        for m in messages:
            yield m
            await asyncio.sleep(pause)

    await service.StreamAccessLogs(it(), None)


def run_interleaved(service, all_streams, pause: float) -> None:
    async def main():
        await asyncio.gather(*(feed(service, msgs, pause) for msgs in all_streams))

    asyncio.run(main())


def by_node(entries):
    out: dict[tuple[str, str], list[bytes]] = {}
    for kind, node, e in entries:
        out.setdefault((kind, node), []).append(e)
    return out


def test_queued_ingest_hands_over_the_same_entries_per_node_in_order():
    rng = random.Random(5)
    all_streams = streams(rng)
    want, got = RecordingSink(), RecordingSink()
    run_interleaved(PerMessageService(want, MixerMetrics(CollectorRegistry())), all_streams, 0.0)
    queued = AccessLogService(got, MixerMetrics(CollectorRegistry()), flush_delay_s=0.05, max_pending=5)
    run_interleaved(queued, all_streams, 0.0005)
    assert by_node(got.entries()) == by_node(want.entries())
    assert len(got.calls) < len(want.calls)  # batches of one node were handed over together


def test_a_finished_stream_is_counted_when_the_call_returns():
    sink = RecordingSink()
    service = AccessLogService(sink, MixerMetrics(CollectorRegistry()), flush_delay_s=3600)
    msgs = streams(random.Random(1))[0]
    asyncio.run(feed(service, msgs))
    assert len(sink.entries()) == sum(len(m.http_logs.log_entry) for m in msgs)
    assert len(sink.calls) == 1  # the stream's batches, aggregated together


def test_an_open_stream_is_ingested_after_the_delay_and_at_the_size_bound():
    sink = RecordingSink()
    service = AccessLogService(sink, MixerMetrics(CollectorRegistry()), flush_delay_s=0.01, max_pending=3)
    msgs = streams(random.Random(2))[0]
    seen: list[int] = []

    async def main():
        release = asyncio.Event()

        async def it():
            yield msgs[0]
            for _ in range(200):  # the delay passes while the stream stays open
                if sink.calls:
                    break
                await asyncio.sleep(0.005)
            seen.append(len(sink.entries()))
            for m in msgs[1:4]:  # three more non-empty ones reach the bound without waiting
                yield m
            seen.append(len(sink.entries()))
            await release.wait()

        task = asyncio.create_task(service.StreamAccessLogs(it(), None))
        await asyncio.sleep(0)
        while len(seen) < 2:
            await asyncio.sleep(0.005)
        release.set()
        await task

    asyncio.run(main())
    first = len(msgs[0].http_logs.log_entry)
    assert seen[0] == first
    nonempty = [m for m in msgs[1:4] if len(m.http_logs.log_entry)]
    if len(nonempty) == 3:
        assert seen[1] == first + sum(len(m.http_logs.log_entry) for m in nonempty)


def test_a_real_telemetry_ends_with_the_same_samples():
    all_streams = streams(random.Random(9))

    def final(service_class, **kw):
        registry = CollectorRegistry()
        metrics = MixerMetrics(registry)
        t = Telemetry(registry, metrics, MixerConfig())
        t.store.clock = lambda: 1000.0
        run_interleaved(service_class(t, metrics, **kw), all_streams, 0.0005)
        return samples(registry), t.store.graph(60)

    assert final(AccessLogService, flush_delay_s=0.002, max_pending=4) == final(PerMessageService)


def test_a_failing_batch_does_not_lose_the_others():
    class Flaky(RecordingSink):
        def tcp(self, node, entries) -> None:
            raise RuntimeError("bad batch")

    sink = Flaky()
    service = AccessLogService(sink, MixerMetrics(CollectorRegistry()), flush_delay_s=3600)
    msgs = streams(random.Random(3))[2]
    asyncio.run(feed(service, msgs))
    assert len(sink.entries()) == sum(len(m.http_logs.log_entry) for m in msgs)
