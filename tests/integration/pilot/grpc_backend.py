"""A real gRPC backend for tests: `python -m tests.integration.pilot.grpc_backend --port P --name A`.

Serves ``/isthmus.test.Echo/Who`` (bytes in, bytes out): answers with its name."""

from __future__ import annotations

import argparse
import signal
import threading
from concurrent import futures

import grpc

METHOD = "/isthmus.test.Echo/Who"


class Who(grpc.GenericRpcHandler):
    def __init__(self, name: str) -> None:
        self.name = name.encode()

    def service(self, details):
        if details.method == METHOD:
            return grpc.unary_unary_rpc_method_handler(lambda request, context: self.name)
        return None


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--name", required=True)
    args = p.parse_args(argv)
    server = grpc.server(futures.ThreadPoolExecutor(4), handlers=[Who(args.name)])
    server.add_insecure_port(f"{args.host}:{args.port}")
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop(0)


if __name__ == "__main__":
    main()
