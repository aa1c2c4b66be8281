"""Non-terminal network (read) filters in front of the terminal one, e.g. ``envoy.filters.network.rbac``.

Contract of a non-terminal network filter factory (what ``proxy.core.listener`` checks):

* ``terminal = False`` (a terminal factory has no such attribute or ``terminal = True``);
* ``check(conn) -> bool``: allow (True) or deny (False) the connection; called once per connection.

When a connection's facts are all known at accept (a plaintext chain), the checks run right away and
a denied connection is closed before the terminal filter exists (tcp_proxy never dials upstream).
On a TLS chain the peer certificate is known only after the handshake, so, as Envoy's network RBAC
does, the checks run on the first decrypted bytes; until then the terminal filter gets nothing.
"""

from __future__ import annotations


class GuardedFilter:
    """The per-connection filter the listener sees: the checks, then the terminal filter."""

    __slots__ = ("_checks", "_terminal_factory", "_terminal", "_conn", "_decided", "_denied")

    def __init__(self, checks: tuple, terminal_factory, conn) -> None:
        self._checks = checks
        self._terminal_factory = terminal_factory
        self._terminal = None
        self._conn = conn
        self._decided = False
        self._denied = False

    def _allowed(self) -> bool:
        self._decided = True
        for check in self._checks:
            if not check(self._conn):
                self._denied = True
                self._conn.close()
                return False
        return True

    def on_new_connection(self, conn) -> None:
        chain = getattr(conn, "filter_chain", None)
        tls = chain is not None and getattr(chain, "transport_socket", None) is not None
        if not tls and not self._allowed():
            return
        self._terminal = self._terminal_factory.create(conn)
        self._terminal.on_new_connection(conn)

    def on_data(self, data: bytes) -> None:
        if self._denied:
            return
        if not self._decided and not self._allowed():
            return
        if self._terminal is not None:
            self._terminal.on_data(data)

    def on_eof(self) -> None:
        if self._denied:
            return
        if not self._decided and not self._allowed():
            return
        if self._terminal is not None:
            self._terminal.on_eof()

    def on_connection_lost(self, exc: BaseException | None) -> None:
        if self._terminal is not None:
            self._terminal.on_connection_lost(exc)

    def on_drain_started(self) -> None:
        if self._terminal is not None:
            self._terminal.on_drain_started()

    # The listener marks an HTTP terminal ``draining`` on a graceful drain (``hasattr(f, "draining")``).
    def __getattr__(self, name: str):
        terminal = object.__getattribute__(self, "_terminal")
        if terminal is None:
            raise AttributeError(name)
        return getattr(terminal, name)

    def __setattr__(self, name: str, value) -> None:
        if name in GuardedFilter.__slots__:
            object.__setattr__(self, name, value)
        elif self._terminal is not None:
            setattr(self._terminal, name, value)
        else:
            raise AttributeError(name)


class GuardedFilterFactory:
    __slots__ = ("checks", "terminal")

    def __init__(self, readers: list, terminal) -> None:
        self.checks = tuple(r.check for r in readers)
        self.terminal = terminal

    def create(self, conn) -> GuardedFilter:
        return GuardedFilter(self.checks, self.terminal, conn)


def is_terminal(factory) -> bool:
    return getattr(factory, "terminal", True)
