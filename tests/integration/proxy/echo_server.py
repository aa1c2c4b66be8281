"""A TCP echo server for proxy tests: `python -m tests.integration.proxy.echo_server --host H --port P`.

Echoes every byte; on the client's half-close it half-closes too (so a test can see FIN propagate).
With ``--tag T`` it first sends ``T`` (to tell upstreams apart)."""

from __future__ import annotations

import argparse
import asyncio


async def main(host: str, port: int, tag: bytes) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if tag:
                writer.write(tag)
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
            await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, port, reuse_address=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tag", default="")
    a = p.parse_args()
    asyncio.run(main(a.host, a.port, a.tag.encode()))
