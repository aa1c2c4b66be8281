"""Pilot's service registries and their aggregate.

* ``serviceentry`` -- ServiceEntry and WorkloadEntry configuration (``ServiceEntryRegistry``).
* ``autoregister`` -- workloads registering through their proxy's xDS Node metadata (``AutoRegistry``;
  the metadata keys are documented there).
* ``docker`` -- containers by label through the ``docker`` package (``DockerRegistry``; labels documented
  there).
* ``aggregate`` -- one ``RegistrySnapshot`` from all of them, with ``subscribe(callback(snapshot,
  endpoints_only))`` for the xDS server.
* ``names`` -- Istio's short-name resolution (``reviews`` -> ``reviews.<ns>.svc.<domain>``) and port
  protocol inference.
"""
