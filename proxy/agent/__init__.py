"""The proxy agent (this mesh's pilot-agent): workload certificates from citadel served to the proxy over
SDS, and the proxy itself: its bootstrap, its process, its readiness and its drain.

Pure logic: csr.py (key + CSR), rotation.py (when to renew, back-off), secrets.py (Secret protos),
bootstrap.py (the proxy's Envoy v3 bootstrap from the node's options), status.py ``route()`` (the status
port's answers), supervisor.py (restart back-off and the start/restart/drain/stop state machine, behind
small process and admin protocols).
I/O: citadel_client.py (CreateCertificate), cert_manager.py (the rotation loop), sds_server.py (SDS on a
Unix socket), process.py (the real ``python -m proxy`` child and admin HTTP client), status.py
``StatusServer`` (``/healthz/ready``, ``/status``, ``/stats/prometheus`` on 15021), app.py (wiring and
signal handling). ``__main__.py`` parses flags only.

Order, as Istio's: SDS socket up; bootstrap written; first certificate (or ``--cert-wait``); proxy started;
on SIGTERM ``/drain_listeners?graceful`` (``inboundonly`` for a sidecar), ``--drain-duration``, then
``/quitquitquit`` (SIGTERM, SIGKILL if it lingers), then the agent exits. A second signal kills the proxy.
"""
