"""The proxy's admin server: Envoy's endpoints and output formats.

Started by ``proxy.server.Server`` as ``AdminServer(server, host, port)`` (``await start()`` /
``await stop()``), or with ``await proxy.admin.server.start_admin(server, bootstrap.admin.address)``.

Semantics follow Envoy:

* ``/ready`` answers 200 ``LIVE`` only when the server is LIVE; otherwise 503 with the state name
  (``PRE_INITIALIZING``, ``INITIALIZING``, ``DRAINING``). As in Envoy, a server whose health check
  was failed with ``POST /healthcheck/fail`` reports ``DRAINING`` (503) until ``POST /healthcheck/ok``.
* Mutating endpoints (``/quitquitquit``, ``/healthcheck/*``, ``/drain_listeners``, ``/logging``,
  ``/reopen_logs``) require POST; any other method gets 405 ``Method GET not allowed, POST required.``
* ``/drain_listeners``: asks the listeners to drain (``server.start_drain``); without ``?graceful``
  they stop accepting at once, with it they keep accepting for ``--drain-time-s`` first;
  ``?inboundonly`` limits both to listeners with ``traffic_direction: INBOUND``.
* Unknown paths get 404 with the list of commands; malformed requests get 400 (431 for a head
  over 60 KiB) and the admin keeps serving.
"""
