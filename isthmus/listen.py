"""Binding listening sockets with one clear error for every component.

A port that is taken must give a message naming the address and port ("cannot listen on
127.0.0.1:15014: Address already in use") and a non-zero exit, whichever component hit it.
"""

from __future__ import annotations

import socket


class ListenError(Exception):
    """A listening socket could not be bound; str() names the address and the reason."""


def bind_tcp(address: tuple[str, int]) -> socket.socket:
    """A bound (not yet listening) TCP socket for (host, port), or ListenError."""
    host, port = address
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise ListenError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def check_free(address: tuple[str, int]) -> None:
    """Raise ListenError now if address is taken (for servers that bind it themselves later)."""
    bind_tcp(address).close()
