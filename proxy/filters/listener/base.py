"""The listener-filter contract (implemented by original_dst, tls_inspector, http_inspector).

Listener filters run on a freshly accepted connection, in configuration order, before the filter
chain is chosen. A filter may *peek*: it sees every byte that has arrived so far, but does not
consume it; the listener replays all those bytes to the terminal network filter afterwards.

A factory (registered in ``LISTENER_FILTERS``) is built once per config; ``create()`` returns a cheap
per-connection filter object:

* ``on_accept(conn) -> bool``: True when the filter is done; False when it needs bytes.
* ``on_data(conn, data: bytes, eof: bool) -> bool``: called with *all* bytes peeked so far (``eof``
  when the peer half-closed or the listener will not wait longer); True when done.
* ``max_read_bytes``: how many bytes the filter may want to look at (a hint for buffering).

A filter that sees data it does not understand just returns True without setting anything. A filter
that must reject the connection sets ``conn.reject_reason`` and returns True; the listener closes it.
"""

from __future__ import annotations


class ListenerFilter:
    max_read_bytes = 0

    def on_accept(self, conn) -> bool:
        return True

    def on_data(self, conn, data: bytes, eof: bool) -> bool:
        return True


class ListenerFilterFactory:
    def create(self) -> ListenerFilter:  # pragma: no cover - interface
        raise NotImplementedError
