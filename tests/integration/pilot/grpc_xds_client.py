"""grpcio's own xDS client, for tests: `GRPC_XDS_BOOTSTRAP=f.json python -m tests.integration.pilot.grpc_xds_client
xds:///host:port`. Calls ``/isthmus.test.Echo/Who`` every 50 ms and prints one line per call:
``ok <backend name>`` or ``err <status code> <details>`` (stdout, flushed)."""

from __future__ import annotations

import sys
import time

import grpc

METHOD = "/isthmus.test.Echo/Who"


def main() -> None:
    target = sys.argv[1]
    channel = grpc.insecure_channel(target)  # the xds: scheme makes grpc ask the bootstrap's server
    who = channel.unary_unary(METHOD)
    while True:
        try:
            print("ok", who(b"", timeout=2).decode(), flush=True)
        except grpc.RpcError as e:
            print("err", e.code().name, (e.details() or "").replace("\n", " "), flush=True)
        time.sleep(0.05)


if __name__ == "__main__":
    main()
