"""A real HTTP upstream for proxy tests: `python -m tests.support.upstream_app --port P --name A`.

Every response is JSON describing what arrived, so a test can see what the proxy forwarded:
``{"upstream": name, "method", "path", "query", "headers": {...}, "body_len", "count"}``.
Request headers steer its behaviour:

* ``x-test-status: 503``        answer with this status
* ``x-test-delay-ms: 500``      wait before answering
* ``x-test-fail-every: 2``      answer 503 to every 2nd request this server sees (1st ok, 2nd fails, ...)
* ``x-test-body-size: 1024``    answer with a body of this many bytes instead of JSON
"""

from __future__ import annotations

import argparse
import asyncio
import json

import uvicorn


def make_app(name: str):
    state = {"count": 0}

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        state["count"] += 1
        count = state["count"]
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        body_len = 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body_len += len(msg.get("body", b""))
            if not msg.get("more_body"):
                break
        delay = int(headers.get("x-test-delay-ms", "0"))
        if delay:
            await asyncio.sleep(delay / 1000)
        status = int(headers.get("x-test-status", "200"))
        every = int(headers.get("x-test-fail-every", "0"))
        if every and count % every == 0:
            status = 503
        size = headers.get("x-test-body-size")
        if size is not None:
            body, ctype = b"x" * int(size), b"application/octet-stream"
        else:
            body = json.dumps(
                {
                    "upstream": name,
                    "method": scope["method"],
                    "path": scope["path"],
                    "raw_path": scope.get("raw_path", b"").decode("latin-1"),
                    "query": scope["query_string"].decode("latin-1"),
                    "headers": headers,
                    "body_len": body_len,
                    "count": count,
                }
            ).encode()
            ctype = b"application/json"
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", ctype), (b"x-upstream", name.encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="upstream")
    args = parser.parse_args(argv)
    uvicorn.run(make_app(args.name), host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
