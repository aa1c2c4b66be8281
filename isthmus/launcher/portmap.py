"""Transparent mode's door from the host into the namespaces: TCP forwards from host addresses to
addresses inside network namespaces (`python -m isthmus.launcher.portmap`).

Transparent mode keeps its bridge in a namespace of its own, so the host has no route to
198.18.0.0/24 and its routing table is never touched. The gateway URL, pilot's API, the dashboard
and each workload's status and admin ports are still reached from the host through this process:
it listens on the host (loopback addresses) and, for each connection, opens a socket inside the
target's network namespace (setns for the duration of one socket() call) and relays bytes both ways,
half-closes included. `GET /ready` on --status answers 200 once every listener is bound.

A forward is written ``HOST:PORT=NETNS,IP:PORT``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ipaddress
import os
import re
import signal
import socket
import sys
from dataclasses import dataclass

NETNS_RUN_DIR = "/var/run/netns"
CLONE_NEWNET = 0x40000000
CONNECT_TIMEOUT_S = 10.0
_NETNS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


# -- the spec (pure) --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Forward:
    host: str
    port: int
    netns: str
    target: str
    target_port: int

    def spec(self) -> str:
        return f"{self.host}:{self.port}={self.netns},{self.target}:{self.target_port}"


def _address(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        raise ValueError(f"{what} {text!r}: expected IP:PORT")
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        raise ValueError(f"{what} {text!r}: {host!r} is not an IPv4 address") from None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{what} {text!r}: port must be 1..65535")
    return host, int(port)


def parse_forward(text: str) -> Forward:
    """``HOST:PORT=NETNS,IP:PORT`` -> Forward; ValueError naming what is wrong."""
    left, sep, right = text.partition("=")
    netns, comma, target = right.partition(",")
    if not sep or not comma:
        raise ValueError(f"forward {text!r}: expected HOST:PORT=NETNS,IP:PORT")
    if not _NETNS.match(netns):
        raise ValueError(f"forward {text!r}: {netns!r} is not a network namespace name")
    host, port = _address(left, "forward")
    ip, target_port = _address(target, "forward")
    return Forward(host, port, netns, ip, target_port)


def check_forwards(forwards: list[Forward]) -> None:
    seen: set[tuple[str, int]] = set()
    for f in forwards:
        if (f.host, f.port) in seen:
            raise ValueError(f"{f.host}:{f.port} is forwarded twice")
        seen.add((f.host, f.port))


# -- I/O ---------------------------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


class Namespaces:
    """Open handles on the target namespaces; `socket(name)` makes a TCP socket inside one."""

    def __init__(self, names: set[str], run_dir: str = NETNS_RUN_DIR) -> None:
        self.home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        self.fds: dict[str, int] = {}
        for name in sorted(names):
            try:
                self.fds[name] = os.open(os.path.join(run_dir, name), os.O_RDONLY)
            except OSError as e:
                raise OSError(f"network namespace {name!r}: {e.strerror}") from None

    def socket(self, name: str) -> socket.socket:
        _setns(self.fds[name])
        try:
            return socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        finally:
            _setns(self.home)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.transport.abort()


async def _relay(
    ns: Namespaces, f: Forward, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    sock = ns.socket(f.netns)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(loop.sock_connect(sock, (f.target, f.target_port)), CONNECT_TIMEOUT_S)
        up_reader, up_writer = await asyncio.open_connection(sock=sock)
    except (OSError, TimeoutError):
        sock.close()
        writer.transport.abort()  # the client sees a reset, as if it had connected directly
        return
    try:
        await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))
    except asyncio.CancelledError:
        pass  # shutting down: the connections are closed below
    finally:
        for w in (writer, up_writer):
            w.close()


async def _status(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\nconnection: close\r\n\r\nready\n")
        await writer.drain()
    writer.close()


async def serve(forwards: list[Forward], status: tuple[str, int]) -> None:
    ns = Namespaces({f.netns for f in forwards})
    servers = []
    for f in forwards:
        try:
            servers.append(
                await asyncio.start_server(
                    lambda r, w, f=f: _relay(ns, f, r, w), f.host, f.port, reuse_address=True
                )
            )
        except OSError as e:
            raise OSError(f"cannot listen on {f.host}:{f.port}: {e.strerror}") from None
    try:
        servers.append(await asyncio.start_server(_status, *status, reuse_address=True))
    except OSError as e:
        raise OSError(f"cannot listen on {status[0]}:{status[1]}: {e.strerror}") from None
    print(f"portmap: {len(forwards)} forwards into namespaces, ready on {status[0]}:{status[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for s in servers:
        s.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m isthmus.launcher.portmap", description=__doc__.split("\n")[0])
    p.add_argument("--status", required=True, metavar="IP:PORT", help="answers GET /ready with 200")
    p.add_argument(
        "--forward", action="append", default=[], metavar="HOST:PORT=NETNS,IP:PORT", help="repeatable"
    )
    args = p.parse_args(argv)
    try:
        forwards = [parse_forward(t) for t in args.forward]
        check_forwards(forwards)
        status = _address(args.status, "--status")
    except ValueError as e:
        p.error(str(e))
    try:
        asyncio.run(serve(forwards, status))
    except OSError as e:
        print(f"portmap: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
