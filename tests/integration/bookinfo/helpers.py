"""Start Bookinfo apps on their own loopback addresses, and a recording upstream to stand in for one."""

from __future__ import annotations

import itertools
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.support.net import free_port, wait_for_http

# Each started app gets the next address of 127.0.0.20-127.0.0.49 (isthmus up's tests use .50 and up).
_addresses = (f"127.0.0.{n}" for n in itertools.cycle(range(20, 50)))


@dataclass
class App:
    name: str
    address: str
    port: int
    proc: object

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"


def start_app(procs, app: str, env: dict[str, str] | None = None, wait: bool = True) -> App:
    """`python -m bookinfo.<app>` on a fresh address and a free port; waits for /health unless told not to."""
    address = next(_addresses)
    port = free_port(address)
    proc = procs.python("-m", f"bookinfo.{app}", "--address", address, "--port", str(port), env=env or {})
    started = App(app, address, port, proc)
    if wait:
        wait_for_http(f"{started.url}/health", timeout=30, proc=proc)
    return started


def upstream_env(name: str, app) -> dict[str, str]:
    """DETAILS_HOSTNAME/DETAILS_SERVICE_PORT (etc.) pointing at `app` (an App or a Recorder)."""
    return {f"{name.upper()}_HOSTNAME": app.address, f"{name.upper()}_SERVICE_PORT": str(app.port)}


def closed_upstream(name: str) -> dict[str, str]:
    """Env pointing `name` at an address and port where nothing listens."""
    address = next(_addresses)
    return {f"{name.upper()}_HOSTNAME": address, f"{name.upper()}_SERVICE_PORT": str(free_port(address))}


@dataclass
class Recorder:
    """An HTTP server that answers canned JSON and records the headers of each request it gets.

    `hold` (a path prefix) makes matching requests wait until `release()`: an upstream that times out.
    """

    responses: dict[str, object]
    hold: str | None = None
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    address: str = field(default_factory=lambda: next(_addresses))

    def __post_init__(self) -> None:
        self._released = threading.Event()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                recorder.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                if recorder.hold and self.path.startswith(recorder.hold):
                    recorder._released.wait(30)
                body = recorder.responses.get(self.path)
                data = json.dumps(body).encode()
                try:
                    self.send_response(200 if body is not None else 404)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the caller gave up (timed out) and closed the connection

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer((self.address, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def headers_for(self, path_prefix: str) -> list[dict[str, str]]:
        return [h for p, h in self.requests if p.startswith(path_prefix)]

    def release(self) -> None:
        self._released.set()

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()
