"""TLS over our own asyncio connections, with ``ssl.MemoryBIO`` + ``SSLObject``.

``TlsSession`` is sans-IO: ciphertext in gives plaintext out (and ciphertext to send), plaintext in
gives ciphertext out. ``TlsTransport`` puts it between a raw asyncio transport and an application
protocol: to the raw transport it is the protocol, to the application it is the transport.

Why not ``loop.start_tls``: the listener filters (tls_inspector) already read the ClientHello, and
those bytes must go into the handshake. ``TlsTransport.attach(raw, pre_read)`` takes them.

After the handshake the peer's SANs are checked against the context's matchers (Python's ``ssl``
cannot), and the connection's facts become ``TlsTransport.info`` (a ``TlsConnectionInfo``). Stats go
under the scope given (``listener.<addr>.ssl.`` or ``cluster.<name>.ssl.``) with Envoy's names.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from isthmus.log import event
from proxy.tls.context import BuiltContext, PeerSans, sans_of, sha256_hex
from proxy.tls.der import subject_rfc4514

log = logging.getLogger("proxy.tls")

HANDSHAKING, OPEN, CLOSED = "handshaking", "open", "closed"
_TICKET_CHECKS = 4  # TLS 1.3 tickets come right after the handshake; stop looking after a few reads


class TlsError(Exception):
    """The TLS session failed. `reason` is a short Envoy-ish cause for logs and stats."""

    def __init__(self, message: str, reason: str = "connection_error") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class TlsConnectionInfo:
    """What a TLS connection knows after its handshake (Envoy's ``Ssl::ConnectionInfo``)."""

    version: str
    cipher: str
    alpn: str  # negotiated ALPN protocol ("" if none)
    sni: str
    peer_certificate_der: bytes | None
    peer_sans: PeerSans = field(default_factory=PeerSans)
    peer_subject: str = ""
    local_sans: PeerSans = field(default_factory=PeerSans)
    # What per-request code derives from these facts (e.g. the XFCC element per XfccConfig, the
    # certificate digest), computed once per peer certificate and context: connections with the
    # same peer certificate under the same context share it.
    memo: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def peer_certificate_presented(self) -> bool:
        return self.peer_certificate_der is not None

    @property
    def peer_uri_sans(self) -> tuple[str, ...]:
        return self.peer_sans.uri

    @property
    def local_uri_sans(self) -> tuple[str, ...]:
        return self.local_sans.uri

    @property
    def sha256_peer_certificate_digest(self) -> str:
        digest = self.memo.get("sha256")
        if digest is None:
            digest = self.memo["sha256"] = (
                sha256_hex(self.peer_certificate_der) if self.peer_certificate_der else ""
            )
        return digest


@dataclass
class FeedResult:
    plaintext: bytes = b""
    handshake_done: bool = False  # the handshake completed during this feed
    peer_closed: bool = False  # close_notify received


class TlsSession:
    """One TLS session, sans-IO. Call ``output()`` after every method to get the bytes to send.

    A client session resumes the session its context keeps for the same SNI (Envoy's
    ``max_session_keys: 1``; a TLS 1.3 ticket, kept in ``built.session_cache``), so a new upstream
    connection skips the certificate exchange. The kept session is replaced by the ticket of a full
    handshake, or of a resumed one once the kept session is past half its ticket lifetime (reading a
    new ticket costs ~220 us). A rotated certificate or trust bundle is a new context with an empty
    cache: nothing resumes across it."""

    def __init__(self, built: BuiltContext, *, server_hostname: str | None = None) -> None:
        self.built = built
        self.server_side = built.config.server_side
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self.obj = built.ssl_context.wrap_bio(
            self._in, self._out, server_side=self.server_side, server_hostname=server_hostname or None
        )
        self.sni = server_hostname or ""
        self.state = HANDSHAKING
        self.info: TlsConnectionInfo | None = None
        # Client: feeds left in which to look for the server's session ticket (0: done / server).
        # Set once the handshake completed: a connection that resumed a session still fresh does
        # not look (reading SSLObject.session re-parses the session and its peer certificate).
        self._ticket_checks = 0
        self._offered: ssl.SSLSession | None = None
        if not self.server_side:
            cached = built.session_cache.get(self.sni)
            if cached is not None:
                self.obj.session = cached
                self._offered = cached

    def start(self) -> None:
        """A client sends its ClientHello (a server waits for one)."""
        if not self.server_side:
            self._handshake()

    def _handshake(self) -> bool:
        try:
            self.obj.do_handshake()
        except ssl.SSLWantReadError:
            return False
        except ssl.SSLCertVerificationError as e:
            self.state = CLOSED
            raise TlsError(
                f"peer certificate verification failed: {e.verify_message}", "fail_verify_error"
            ) from None
        except ssl.SSLError as e:
            self.state = CLOSED
            raise TlsError(f"TLS handshake failed: {e.reason or e}", _reason_of(e)) from None
        self.state = OPEN
        self.info = self._connection_info()
        if not self.server_side and not (self.obj.session_reused and _fresh(self._offered)):
            self._ticket_checks = _TICKET_CHECKS
        return True

    def feed(self, data: bytes) -> FeedResult:
        """Ciphertext from the peer. Raises TlsError when the session fails (send ``output()`` first:
        it may hold an alert)."""
        result = FeedResult()
        if self.state == CLOSED:
            return result
        if data:
            self._in.write(data)
        if self.state == HANDSHAKING:
            if not self._handshake():
                return result
            result.handshake_done = True
        # Read while the BIO holds ciphertext or OpenSSL holds plaintext: the common case (whole
        # records) ends without an SSLWantReadError, whose construction costs more than the read.
        obj, bio = self.obj, self._in
        chunks = []
        while bio.pending or obj.pending():
            try:
                chunk = obj.read(65536)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                result.peer_closed = True
                break
            except ssl.SSLError as e:
                self.state = CLOSED
                raise TlsError(f"TLS error: {e.reason or e}", _reason_of(e)) from None
            if not chunk:
                result.peer_closed = True
                break
            chunks.append(chunk)
        # TLS 1.3 tickets follow the client's Finished: none can be in the flight that ended the
        # handshake (TLS 1.2 sends its ticket inside the handshake: look at once).
        if self._ticket_checks and not (result.handshake_done and self.info.version == "TLSv1.3"):
            self._keep_session()
        if chunks:
            result.plaintext = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return result

    def _keep_session(self) -> None:
        self._ticket_checks -= 1
        session = self.obj.session
        if session is not None and session.has_ticket:
            self.built.session_cache[self.sni] = session
            self._ticket_checks = 0

    @property
    def session_reused(self) -> bool:
        return self.obj.session_reused

    def send(self, data: bytes) -> None:
        if self.state != OPEN:
            raise TlsError("cannot send before the handshake completed or after close")
        n = self.obj.write(data)  # a MemoryBIO takes everything at once
        if n < len(data):
            view = memoryview(data)[n:]
            while view:
                view = view[self.obj.write(view) :]

    def close(self) -> None:
        """Send close_notify (we do not wait for the peer's)."""
        if self.state == OPEN:
            try:
                self.obj.unwrap()
            except (ssl.SSLWantReadError, ssl.SSLError):
                pass
        self.state = CLOSED

    def output(self) -> bytes:
        return self._out.read()

    def _connection_info(self) -> TlsConnectionInfo:
        obj = self.obj
        der = obj.getpeercert(binary_form=True)
        facts = peer_facts(self.built, der) if der else _NO_PEER
        cipher = obj.cipher()
        return TlsConnectionInfo(
            version=obj.version() or "",
            cipher=cipher[0] if cipher else "",
            alpn=obj.selected_alpn_protocol() or "",
            sni=self.sni or (getattr(obj, "server_hostname", None) or ""),
            peer_certificate_der=der or None,
            peer_sans=facts.sans,
            peer_subject=facts.subject,
            local_sans=self.built.local_sans,
            memo={} if facts is _NO_PEER else facts.memo,
        )


@dataclass(frozen=True)
class PeerFacts:
    """What a peer certificate says (read with the DER walk) and what per-request code derives from
    it (``memo``); one per certificate and context."""

    sans: PeerSans
    subject: str
    memo: dict = field(default_factory=dict, compare=False, repr=False)


_NO_PEER = PeerFacts(PeerSans(), "")
PEER_FACTS_MAX = 1024  # distinct peer certificates remembered per context (then start over)


def peer_facts(built: BuiltContext, der: bytes) -> PeerFacts:
    """The facts of a peer certificate, read once per context (a rotated context starts empty)."""
    cache = built.peer_facts
    facts = cache.get(der)
    if facts is None:
        try:
            facts = PeerFacts(sans_of(der), subject_rfc4514(der))
        except ValueError:
            facts = PeerFacts(PeerSans(), "")
        if len(cache) >= PEER_FACTS_MAX:
            cache.clear()
        cache[der] = facts
    return facts


def _fresh(session: ssl.SSLSession | None) -> bool:
    """A cached session in the first half of its ticket's lifetime: a connection that resumed it
    keeps it instead of taking the new ticket (Envoy keeps the newest; a resumed session carries
    the same identities, so only its age matters)."""
    if session is None:
        return False
    lifetime = session.ticket_lifetime_hint
    return lifetime > 0 and time.time() - session.time < lifetime / 2


def _reason_of(e: ssl.SSLError) -> str:
    reason = (e.reason or "").upper()
    if "PEER_DID_NOT_RETURN_A_CERTIFICATE" in reason or "CERTIFICATE_REQUIRED" in reason:
        return "fail_verify_no_cert"
    if "CERTIFICATE_VERIFY_FAILED" in reason:
        return "fail_verify_error"
    return "connection_error"


class TlsStats:
    """Envoy's TLS stats under a scope's ``ssl.`` prefix."""

    def __init__(self, scope) -> None:
        self.scope = scope.scope("ssl.")
        s = self.scope
        self.handshake = s.counter("handshake")
        self.connection_error = s.counter("connection_error")
        self.fail_verify_san = s.counter("fail_verify_san")
        self.fail_verify_error = s.counter("fail_verify_error")
        self.fail_verify_no_cert = s.counter("fail_verify_no_cert")
        self.no_certificate = s.counter("no_certificate")
        self.session_reused = s.counter("session_reused")

    def count_failure(self, reason: str) -> None:
        getattr(self, reason, self.connection_error).inc()

    def count_handshake(self, info: TlsConnectionInfo, session_reused: bool = False) -> None:
        self.handshake.inc()
        if session_reused:
            self.session_reused.inc()
        if not info.peer_certificate_presented:
            self.no_certificate.inc()
        if info.version:
            self.scope.counter(f"versions.{info.version}").inc()
        if info.cipher:
            self.scope.counter(f"ciphers.{info.cipher}").inc()


_STATS_CACHE: dict[tuple[int, str], TlsStats] = {}


def tls_stats(scope) -> TlsStats:
    """One TlsStats per (store, prefix), so connections do not recreate counters."""
    key = (id(scope.store), scope.prefix)
    stats = _STATS_CACHE.get(key)
    if stats is None:
        stats = _STATS_CACHE[key] = TlsStats(scope)
    return stats


class TlsTransport(asyncio.Transport):
    """TLS between a raw transport (we are its protocol) and an application protocol (we are its
    transport). Plaintext written before the handshake completes is sent right after it."""

    def __init__(
        self,
        built: BuiltContext,
        app_protocol: asyncio.BaseProtocol,
        *,
        server_hostname: str | None = None,
        stats: TlsStats | None = None,
        on_handshake: Callable[[TlsTransport], None] | None = None,
        name: str = "",
    ) -> None:
        super().__init__()
        self.session = TlsSession(built, server_hostname=server_hostname)
        self.built = built
        self._app = app_protocol
        self._raw: asyncio.Transport | None = None
        self._stats = stats
        self._on_handshake = on_handshake
        self._name = name
        self._pending_writes: list[bytes] = []
        self._pending_plain: list[bytes] = []
        self._app_paused = False
        self._closing = False
        self._close_after_handshake = False
        self._eof_to_app = False
        self._eof_pending = False
        self._handshake_waiter: asyncio.Future | None = None
        self._handshake_error: BaseException | None = None
        self.failure: TlsError | None = None

    # ---- facts ---------------------------------------------------------------------------------

    @property
    def info(self) -> TlsConnectionInfo | None:
        return self.session.info

    @property
    def handshake_complete(self) -> bool:
        return self.session.info is not None and self.failure is None

    async def wait_handshake(self) -> TlsConnectionInfo:
        """Until the handshake completed (and the SAN check passed); raises TlsError or
        ConnectionError when it did not."""
        if self.handshake_complete:
            return self.session.info
        if self._handshake_error is not None:
            raise self._handshake_error
        if self._handshake_waiter is None:
            self._handshake_waiter = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._handshake_waiter)
        return self.session.info

    # ---- raw side (asyncio.Protocol) -----------------------------------------------------------

    def attach(self, raw: asyncio.Transport, pre_read: bytes = b"") -> None:
        """Take over an already connected raw transport (downstream, after the listener filters)
        and feed it the bytes they already read."""
        self._raw = raw
        raw.set_protocol(self)
        self.session.start()
        self._flush()
        if pre_read:
            self.data_received(pre_read)

    def connection_made(self, transport) -> None:
        """A new raw connection (upstream): start the handshake; the application may write at once."""
        self._raw = transport
        self._app.connection_made(self)
        self.session.start()
        self._flush()

    def data_received(self, data: bytes) -> None:
        if self.failure is not None or self._raw is None:
            return
        try:
            result = self.session.feed(data)
        except TlsError as e:
            self._flush()
            self._fail(e)
            return
        self._flush()
        if result.handshake_done and not self._handshake_finished():
            return
        if result.plaintext:
            if self._app_paused:
                self._pending_plain.append(result.plaintext)
            else:
                self._app.data_received(result.plaintext)
        if result.peer_closed:
            if self._pending_plain:
                self._eof_pending = True  # after the plaintext the application has not read yet
            else:
                self._peer_eof()

    def eof_received(self) -> bool:
        if self.session.info is None and self.failure is None:
            self._fail(TlsError("peer closed the connection during the TLS handshake", "handshake_eof"))
            return False
        if self._pending_plain:
            self._eof_pending = True
        else:
            self._peer_eof()
        return True

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.session.info is None and self.failure is None:
            self._settle_handshake(
                ConnectionError(f"connection closed during the TLS handshake: {exc or 'EOF'}")
            )
        self.session.close()
        self._raw = None
        self._app.connection_lost(exc)

    def pause_writing(self) -> None:
        self._app.pause_writing()

    def resume_writing(self) -> None:
        self._app.resume_writing()

    # ---- internals -----------------------------------------------------------------------------

    def _flush(self) -> None:
        out = self.session.output()
        if out and self._raw is not None and not self._raw.is_closing():
            self._raw.write(out)

    def _handshake_finished(self) -> bool:
        info = self.session.info
        if not self.built.san_matchers.verify(info.peer_sans):
            self._fail(
                TlsError(
                    f"peer SANs {list(info.peer_sans.all) or '(none)'} match none of "
                    f"{list(self.built.san_matchers.described)}",
                    "fail_verify_san",
                )
            )
            return False
        if self._stats is not None:
            self._stats.count_handshake(info, self.session.session_reused)
        self._settle_handshake(None)
        if self._on_handshake is not None:
            self._on_handshake(self)
        pending, self._pending_writes = self._pending_writes, []
        for data in pending:
            self.session.send(data)
        self._flush()
        if self._close_after_handshake:
            self.close()
        return True

    def _settle_handshake(self, error: BaseException | None) -> None:
        self._handshake_error = error
        w = self._handshake_waiter
        if w is not None and not w.done():
            if error is None:
                w.set_result(None)
            else:
                w.set_exception(error)
                w.exception()  # retrieved: nobody may be waiting

    def _fail(self, error: TlsError) -> None:
        self.failure = error
        if self._stats is not None and error.reason != "handshake_eof":
            self._stats.count_failure(error.reason)
        event(log, logging.DEBUG, "tls.failed", connection=self._name, reason=error.reason, error=str(error))
        self._settle_handshake(error)
        if self._raw is not None:
            self._raw.close()  # after the alert in its buffer

    def _peer_eof(self) -> None:
        if self._eof_to_app:
            return
        self._eof_to_app = True
        keep_open = self._app.eof_received()
        if not keep_open:
            self.close()

    # ---- application side (asyncio.Transport) --------------------------------------------------

    def write(self, data) -> None:
        if self._closing or self.failure is not None or not data:
            return
        if self.session.state != "open":
            self._pending_writes.append(bytes(data))
            return
        self.session.send(data)
        self._flush()

    def writelines(self, list_of_data) -> None:
        # One TLS record (and one socket write) for the whole list.
        self.write(b"".join(list_of_data))

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        """TLS has no half-close of its own: send close_notify, then FIN."""
        if self.session.state == "open":
            self.session.close()
            self._flush()
        if self._raw is not None and self._raw.can_write_eof() and not self._raw.is_closing():
            self._raw.write_eof()

    def close(self) -> None:
        if self._closing:
            return
        if self.session.state == "handshaking" and self._pending_writes and self.failure is None:
            self._close_after_handshake = True  # what the application wrote goes out first
            return
        self._closing = True
        self.session.close()
        self._flush()
        if self._raw is not None:
            self._raw.close()

    def abort(self) -> None:
        self._closing = True
        if self._raw is not None:
            self._raw.abort()

    def is_closing(self) -> bool:
        return self._closing or self._raw is None or self._raw.is_closing()

    def pause_reading(self) -> None:
        self._app_paused = True
        if self._raw is not None:
            self._raw.pause_reading()

    def resume_reading(self) -> None:
        self._app_paused = False
        while self._pending_plain and not self._app_paused:
            self._app.data_received(self._pending_plain.pop(0))
        if self._eof_pending and not self._pending_plain:
            self._eof_pending = False
            self._peer_eof()
        if self._raw is not None and not self._app_paused:
            self._raw.resume_reading()

    def is_reading(self) -> bool:
        return not self._app_paused

    def set_write_buffer_limits(self, high=None, low=None) -> None:
        if self._raw is not None:
            self._raw.set_write_buffer_limits(high=high, low=low)

    def get_write_buffer_size(self) -> int:
        return self._raw.get_write_buffer_size() if self._raw is not None else 0

    def get_write_buffer_limits(self):
        return self._raw.get_write_buffer_limits() if self._raw is not None else (0, 0)

    def set_protocol(self, protocol) -> None:
        self._app = protocol

    def get_protocol(self):
        return self._app

    def get_extra_info(self, name, default=None):
        if name == "ssl_object":
            return self.session.obj
        if name == "sslcontext":
            return self.built.ssl_context
        if name == "peercert":
            return self.session.obj.getpeercert() if self.session.info else default
        if name == "cipher":
            return self.session.obj.cipher()
        if name == "tls_info":
            return self.session.info
        return self._raw.get_extra_info(name, default) if self._raw is not None else default
