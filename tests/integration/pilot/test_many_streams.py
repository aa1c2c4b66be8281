"""Many ADS streams multiplexed on one gRPC channel to a real `python -m pilot`: every one gets its
config (more than HTTP/2's usual 100 concurrent streams per connection), decoded by the standard
generated stub, and every one gets the next push."""

from __future__ import annotations

import asyncio

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from tests.integration.pilot.ads_client import CDS, RDS
from tests.integration.pilot.pilot_harness import start_pilot

STREAMS = 250
SERVICES = 40


def services_yaml() -> str:
    return "---\n".join(
        f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: svc{i}, namespace: default}}
spec:
  hosts: [svc{i}.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 127.1.0.{i + 1}}}]
"""
        for i in range(SERVICES)
    )


VS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: svc0, namespace: default}
spec:
  hosts: [svc0.default.svc.cluster.local]
  http:
  - timeout: 9s
    route:
    - destination: {host: svc0.default.svc.cluster.local}
"""


async def one_stream(stub, index: int, results: dict) -> None:
    node = base_pb2.Node(id=f"sidecar~127.2.0.{index % 250 + 1}~c{index}.default~default.svc.cluster.local")
    outbox: asyncio.Queue = asyncio.Queue()

    async def requests():
        while (item := await outbox.get()) is not None:
            yield item

    outbox.put_nowait(discovery_pb2.DiscoveryRequest(type_url=CDS, node=node))
    outbox.put_nowait(discovery_pb2.DiscoveryRequest(type_url=RDS, resource_names=["9080"]))
    call = stub.StreamAggregatedResources(requests())
    try:
        async for response in call:
            outbox.put_nowait(
                discovery_pb2.DiscoveryRequest(
                    type_url=response.type_url,
                    resource_names=["9080"] if response.type_url == RDS else [],
                    response_nonce=response.nonce,
                    version_info=response.version_info,
                )
            )
            if response.type_url == CDS:
                results.setdefault("clusters", {})[index] = {
                    cluster_pb2.Cluster.FromString(r.value).name for r in response.resources
                }
            elif response.type_url == RDS:
                [rc] = [route_pb2.RouteConfiguration.FromString(r.value) for r in response.resources]
                timeouts = {
                    route.route.timeout.seconds
                    for vh in rc.virtual_hosts
                    if "svc0.default.svc.cluster.local" in vh.domains
                    for route in vh.routes
                }
                results.setdefault("timeouts", {}).setdefault(index, []).append(timeouts)
                if 9 in timeouts:
                    return
    finally:
        outbox.put_nowait(None)
        call.cancel()


async def run_streams(address: str, pilot) -> dict:
    results: dict = {}
    async with grpc.aio.insecure_channel(address) as channel:  # one HTTP/2 connection for all streams
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        tasks = [asyncio.create_task(one_stream(stub, i, results)) for i in range(STREAMS)]
        for _ in range(600):
            if len(results.get("timeouts", {})) == STREAMS:
                break
            await asyncio.sleep(0.05)
        results["first_round"] = len(results.get("timeouts", {}))
        status, body = await asyncio.to_thread(
            pilot.put, "/apis/networking.istio.io/v1/namespaces/default/virtualservices/svc0", VS
        )
        assert status in (200, 201), body
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
    return results


def test_hundreds_of_streams_on_one_channel_all_get_config_and_the_next_push(procs, tmp_path):
    (tmp_path / "services.yaml").write_text(services_yaml())
    pilot = start_pilot(procs, tmp_path, "--log-level", "warning")
    results = asyncio.run(run_streams(pilot.grpc, pilot))
    assert results["first_round"] == STREAMS
    wanted = {f"outbound|9080||svc{i}.default.svc.cluster.local" for i in range(SERVICES)}
    assert len(results["clusters"]) == STREAMS
    assert all(wanted <= names for names in results["clusters"].values())
    # every stream saw the route before the change (no 9 s timeout) and then the pushed one
    assert all(seen[0] != {9} and seen[-1] == {9} for seen in results["timeouts"].values())
