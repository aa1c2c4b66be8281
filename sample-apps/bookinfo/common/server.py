"""Run a Bookinfo ASGI app with uvicorn on a socket we bind ourselves.

Binding first means a port that is taken gives one clear line naming the address and port, and a
non-zero exit, instead of a uvicorn traceback.
"""

from __future__ import annotations

import logging
import socket
import sys
import time

import uvicorn
from starlette.requests import Request

from isthmus.log import event

log = logging.getLogger("bookinfo.server")


class ListenError(Exception):
    pass


def bind(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address, port))
    except OSError as e:
        sock.close()
        raise ListenError(f"cannot listen on {address}:{port}: {e.strerror or e}") from None
    return sock


def install_access_log(app, component: str) -> None:
    """One structured line per request (uvicorn's own access log is off)."""
    access = logging.getLogger(f"bookinfo.{component}.access")

    @app.middleware("http")
    async def access_log(request: Request, call_next):
        started = time.monotonic()
        response = await call_next(request)
        event(
            access,
            logging.INFO,
            "http.request",
            method=request.method,
            path=request.url.path,
            status=response.status_code,
            duration_ms=round((time.monotonic() - started) * 1000, 1),
            request_id=request.headers.get("x-request-id", "-"),
        )
        return response


def serve(app, address: str, port: int, component: str) -> int:
    """Serve until SIGINT/SIGTERM; return the process exit status."""
    try:
        sock = bind(address, port)
    except ListenError as e:
        print(f"{component}: {e}", file=sys.stderr)
        event(log, logging.ERROR, "server.listen_failed", address=f"{address}:{port}", error=str(e))
        return 1
    config = uvicorn.Config(
        app, log_config=None, access_log=False, lifespan="on", timeout_graceful_shutdown=5
    )
    server = uvicorn.Server(config)
    event(log, logging.INFO, "server.listening", address=f"{address}:{sock.getsockname()[1]}")
    server.run(sockets=[sock])
    event(log, logging.INFO, "server.stopped")
    return 0 if server.started else 1
