"""Issue 7 end to end, pilot side: a real pilot started with ``--mixer-address`` configures a real
ingress gateway proxy (over ADS) to use a real mixer: an AuthorizationPolicy CUSTOM on the gateway is
checked by mixer (its deny-list answers 403 with UAEX), and every request is reported to mixer's
telemetry (istio_requests_total counts exactly what went through)."""

from __future__ import annotations

import textwrap
import urllib.error
import urllib.request

import yaml

from tests.integration.mixer.harness import start_mixer, wait_until
from tests.integration.pilot.pilot_harness import start_pilot
from tests.integration.proxy.harness import admin_block, start_upstream
from tests.support.net import free_port, wait_for_http, wait_for_port

GATEWAY_IP = "127.0.0.1"

MIXER_CONFIG = """
policy:
  rules:
  - name: deny-path
    list: {attribute: request.path, entries: ["/denied"]}
telemetry:
  accessLog: {path: "-"}
"""


def mesh_yaml(upstream_port: int, gw_port: int) -> str:
    return textwrap.dedent(
        f"""
        apiVersion: networking.istio.io/v1beta1
        kind: ServiceEntry
        metadata: {{name: web, namespace: default}}
        spec:
          hosts: [web.default.svc.cluster.local]
          location: MESH_INTERNAL
          resolution: STATIC
          ports: [{{number: 8000, name: http, protocol: HTTP}}]
          endpoints: [{{address: 127.0.0.1, ports: {{http: {upstream_port}}}}}]
        ---
        apiVersion: networking.istio.io/v1beta1
        kind: DestinationRule
        metadata: {{name: web, namespace: default}}
        spec:
          host: web.default.svc.cluster.local
          trafficPolicy: {{tls: {{mode: DISABLE}}}}  # the upstream app has no sidecar
        ---
        apiVersion: networking.istio.io/v1beta1
        kind: Gateway
        metadata: {{name: gw, namespace: istio-system}}
        spec:
          selector: {{istio: ingressgateway}}
          servers: [{{port: {{number: {gw_port}, name: http, protocol: HTTP}}, hosts: ["*"]}}]
        ---
        apiVersion: networking.istio.io/v1beta1
        kind: VirtualService
        metadata: {{name: web, namespace: istio-system}}
        spec:
          hosts: ["*"]
          gateways: [gw]
          http: [{{route: [{{destination: {{host: web.default.svc.cluster.local, port: {{number: 8000}}}}}}]}}]
        ---
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {{name: ext, namespace: istio-system}}
        spec:
          selector: {{matchLabels: {{istio: ingressgateway}}}}
          action: CUSTOM
          provider: {{name: mixer}}
          rules: [{{}}]
        """
    )


def gateway_bootstrap(xds: str) -> dict:
    host, port = xds.rsplit(":", 1)
    return {
        "node": {
            "id": f"router~{GATEWAY_IP}~istio-ingressgateway-1.istio-system~istio-system.svc.cluster.local",
            "cluster": "istio-ingressgateway",
            "metadata": {
                "NAMESPACE": "istio-system",
                "WORKLOAD_NAME": "istio-ingressgateway",
                "LABELS": {"istio": "ingressgateway"},  # no app label: nothing to auto-register
                "INTERCEPTION_MODE": "NONE",
            },
        },
        "static_resources": {
            "clusters": [
                {
                    "name": "xds-grpc",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": "xds-grpc",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {"address": host, "port_value": int(port)}
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ]
        },
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}],
            },
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
        },
    }


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{GATEWAY_IP}:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_pilot_wires_gateway_to_mixer_for_custom_policy_and_telemetry(procs, tmp_path):
    mixer = start_mixer(procs, tmp_path, MIXER_CONFIG)
    upstream = start_upstream(procs, "web")
    gw_port = free_port(GATEWAY_IP)
    cfg = tmp_path / "config"
    cfg.mkdir()
    (cfg / "mesh.yaml").write_text(mesh_yaml(upstream, gw_port))
    pilot = start_pilot(procs, cfg, "--mixer-address", f"127.0.0.1:{mixer.grpc_port}")
    admin = free_port()
    bootstrap = {**gateway_bootstrap(pilot.grpc), "admin": admin_block(admin)}
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(bootstrap))
    proxy = procs.python("-m", "proxy", "-c", str(tmp_path / "gateway.yaml"))
    # LIVE once pilot's first push is applied (30 s: pilot and the proxy start cold on a loaded CI box)
    ready = f"http://127.0.0.1:{admin}/ready"
    try:
        wait_for_http(ready, proc=proxy, timeout=15)
    except TimeoutError:
        # Known proxy bug (reported): the proxy may apply pilot's LDS while it is still applying the CDS
        # that carries the mixer cluster (proxy/xds/handlers.py awaits cluster starts mid-update), and NACK
        # the listener for an "unknown gRPC client cluster". Envoy pauses LDS during a CDS update. The next
        # push recovers; make one by changing web's DestinationRule (its connect timeout).
        (cfg / "mesh.yaml").write_text(
            mesh_yaml(upstream, gw_port).replace(
                "tls: {mode: DISABLE}", "tls: {mode: DISABLE}, connectionPool: {tcp: {connectTimeout: 2s}}"
            )
        )
        try:
            wait_for_http(ready, proc=proxy, timeout=30)
        except (TimeoutError, RuntimeError) as e:
            raise AssertionError(
                f"{e}\n--- proxy ---\n{procs.output(proxy)[-3000:]}\n--- pilot ---\n{procs.output(pilot.proc)[-3000:]}"
            ) from None
    wait_for_port(GATEWAY_IP, gw_port, proc=proxy)

    # The listener may accept before its routes (RDS) arrive: wait on a first 200, counting every
    # request sent, since each one is reported.
    sent = {"ok": 0, "other": 0}

    def first_ok() -> bool:
        status, _ = get(gw_port, "/allowed")
        sent["ok" if status == 200 else "other"] += 1
        return status == 200

    wait_until(first_ok, timeout=15)
    n = 5
    for _ in range(n):
        status, _ = get(gw_port, "/allowed")
        assert status == 200
    sent["ok"] += n
    status, body = get(gw_port, "/denied")
    assert status == 403 and "PERMISSION_DENIED" in body
    total = sent["ok"] + sent["other"] + 1

    def reported() -> bool:
        return mixer.metric_sum("istio_requests_total", reporter="source") == total

    wait_until(reported, timeout=15)
    assert mixer.metric_sum("istio_requests_total", reporter="source", response_code="200") == sent["ok"]
    assert (
        mixer.metric_sum(
            "istio_requests_total", reporter="source", response_code="403", response_flags="UAEX"
        )
        == 1
    )
