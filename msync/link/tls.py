"""
TLS for device connections: Twisted's memory-BIO TLS protocol, made to
keep as little as it can for an idle connection.

A TLS 1.3 connection is handed to L{msync.link.records.RecordLayer} as
soon as its handshake is done, and OpenSSL's connection is freed: it
kept about 21 KiB per connection (the connection object, a record layer
each way, cipher contexts, the session) that the record layer replaces
with its keys and counters.  The traffic secrets come from OpenSSL's
key log callback, which a server context of this module's factory
carries; they are held by the connection only until the hand-over and
never logged.

To hand over at a known record count, the handshake is fed to OpenSSL a
record at a time: when the record that ends it (the client's Finished)
has been read, OpenSSL has read no application record, and every
record it has written since under the new keys (its session tickets) is
counted as the record layer's first.

A connection that negotiates TLS 1.2 stays with OpenSSL.  For those,
pyOpenSSL feeds OpenSSL through two memory BIOs, one each way, and a
memory BIO keeps a buffer as large as the most it ever held at once for
the life of the connection.  L{LeanTLSProtocol} swaps both BIOs for
fresh, empty ones whenever they held more than L{RELEASE_AT} bytes and
are empty again.  OpenSSL's own record buffers need no such help:
Twisted's C{CertificateOptions} already sets C{MODE_RELEASE_BUFFERS}.
"""

from __future__ import annotations

from typing import Any

# pyOpenSSL has no public way to replace a connection's memory BIOs; its
# binding does (the same calls Connection.__init__ makes), and the
# connection keeps the BIOs in two attributes.  renewable() checks that
# both are there, and the tests fail if a pyOpenSSL upgrade removes them.
from OpenSSL._util import ffi as _ffi
from OpenSSL._util import lib as _lib
from OpenSSL.SSL import Connection, WantReadError
from twisted.internet.interfaces import (
    IProtocolFactory,
    IReactorTime,
    ITransport,
)
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOFactory

from msync.link.records import MAX_CIPHERTEXT, SUITES, RecordLayer
from msync.transports import send_now

#: Bytes a BIO may have held before its buffer is worth giving back.  A
#: ping and its pong stay far below; the handshake goes above.
RELEASE_AT = 1024

#: Most bytes read from the outgoing BIO at a time.
_CHUNK = 2**15

#: The key log's labels of the two application traffic secrets.
_CLIENT_SECRET = b"CLIENT_TRAFFIC_SECRET_0"
_SERVER_SECRET = b"SERVER_TRAFFIC_SECRET_0"
_SECRET_LABELS = (_CLIENT_SECRET, _SERVER_SECRET)

#: A record header's first byte once records are protected.
_PROTECTED = 23

#: The longest record a TLS 1.2 or 1.3 peer may send, with its header.
_MAX_RECORD = 5 + MAX_CIPHERTEXT + 2048 - 256


def renewable(connection: Connection) -> bool:
    """Whether C{connection} is built on memory BIOs this module can
    swap."""
    return (
        getattr(connection, "_into_ssl", None) is not None
        and getattr(connection, "_from_ssl", None) is not None
        and getattr(connection, "_ssl", None) is not None
    )


def renew_bios(connection: Connection) -> bool:
    """
    Give C{connection} two new, empty memory BIOs; OpenSSL frees the old
    ones with their buffers.  Only call it when both are empty: whatever
    they still hold is lost.

    @return: whether they were swapped (not when memory ran out).
    """
    into = _lib.BIO_new(_lib.BIO_s_mem())
    out = _lib.BIO_new(_lib.BIO_s_mem())
    if into == _ffi.NULL or out == _ffi.NULL:
        # Keep the old ones: they still work.
        if into != _ffi.NULL:
            _lib.BIO_free(into)
        if out != _ffi.NULL:
            _lib.BIO_free(out)
        return False
    _lib.SSL_set_bio(connection._ssl, into, out)
    connection._into_ssl = into
    connection._from_ssl = out
    return True


class LeanTLSProtocol(BufferingTLSTransport):
    """
    A server's TLS layer that hands a TLS 1.3 connection to a
    L{RecordLayer} once its handshake is done, and otherwise releases its
    BIO buffers once they are empty after holding more than
    L{RELEASE_AT} bytes.  Either way it is Twisted's default TLS layer,
    small writes gathered until the reactor next turns included.

    Both BIOs are known to be empty at two points, as the outgoing one
    is always read until it is: once a received chunk has been read
    through to C{WantReadError} (a read that stops for want of bytes has
    taken every byte the incoming BIO had; a partial record waits in
    OpenSSL's own buffer), and after a write made outside of reading a
    chunk.  Nothing is swapped while a chunk is being read, before the
    handshake is done, or once the connection is closing.
    """

    # Slots, not instance attributes: set late in a connection's life,
    # after a burst of connections, attributes find no room left in the
    # key table CPython shares between instances (see makeConnection),
    # and each connection got a dict of its own (832 bytes).
    __slots__ = ("_early", "_held", "_receiving", "_secrets")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._held = 0
        self._receiving = False
        # Bytes received during the handshake and not yet given to
        # OpenSSL (part of a record); None once the handshake is over.
        self._early: bytes | None = b""
        # The two application traffic secrets, by key log label, until
        # the hand-over.
        self._secrets: dict[bytes, bytes] | None = None

    def makeConnection(self, transport: ITransport) -> None:
        # CPython 3.11 shares one key table among a class's instances, but
        # each new instance shrinks the room left for new keys.  The TCP
        # transport sets two attributes only at its first write; after a
        # burst of connections (a restart, when every device comes back)
        # there is no room left and every transport gets a dict of its
        # own, 832 bytes.  Setting them now, to the values they already
        # have, puts them in the shared table with the first connection.
        for name in ("dataBuffer", "offset"):
            if hasattr(transport, name):
                setattr(transport, name, getattr(transport, name))
        super().makeConnection(transport)
        # The key log callback finds the protocol through the connection
        # (as Twisted's own SNI and ALPN callbacks expect to).
        if self._tlsConnection is not None:
            self._tlsConnection.set_app_data(self)

    def key_logged(self, line: bytes) -> None:
        """Keep an application traffic secret from OpenSSL's key log."""
        label, _, rest = line.partition(b" ")
        if label not in _SECRET_LABELS or self._early is None:
            return
        if self._secrets is None:
            self._secrets = {}
        self._secrets[label] = bytes.fromhex(rest.rpartition(b" ")[2].decode())

    def dataReceived(self, data: bytes) -> None:
        self._held = max(self._held, len(data))
        self._receiving = True
        try:
            if self._early is None:
                super().dataReceived(data)
            else:
                self._handshake_received(data)
        finally:
            self._receiving = False
        self._release()

    def _handshake_received(self, data: bytes) -> None:
        """
        Give OpenSSL whole records, one at a time, until the handshake is
        done; then whatever follows goes to the layer that took over.
        """
        assert self._early is not None
        pending = self._early + data if self._early else data
        at = 0
        while not self._handshakeDone and len(pending) - at >= 5:
            end = at + 5 + int.from_bytes(pending[at + 3 : at + 5], "big")
            if end - at > _MAX_RECORD:
                # Not a record anyone may send: OpenSSL refuses it.
                end = len(pending)
            if end > len(pending):
                break
            super().dataReceived(pending[at:end])
            at = end
            if self._lostTLSConnection or self._aborted:
                self._early = None
                return
        if not self._handshakeDone:
            self._early = pending[at:]
            return
        self._early = None
        if at < len(pending):
            super().dataReceived(pending[at:])

    def _checkHandshakeStatus(self) -> None:
        done = self._handshakeDone
        super()._checkHandshakeStatus()
        if self._handshakeDone and not done:
            self._hand_over()

    def _hand_over(self) -> None:
        """
        Put a L{RecordLayer} in the OpenSSL connection's place, if the
        connection is TLS 1.3 and its secrets were logged.
        """
        connection = self._tlsConnection
        secrets, self._secrets = self._secrets or {}, None

        # What OpenSSL wrote once the handshake was done, under the new
        # keys: its session tickets.  They go out first, whatever follows.
        tail = self._drain()
        written = _whole_records(tail)
        if tail:
            self.transport.write(tail)  # type: ignore[union-attr]

        suite = connection.get_cipher_name()
        if (
            connection.get_protocol_version_name() != "TLSv1.3"
            or suite not in SUITES
            or written is None
            or len(secrets) != len(_SECRET_LABELS)
        ):
            return
        # Twisted declares a pyOpenSSL Connection here; the record layer
        # answers every call Twisted makes of one.
        self._tlsConnection = RecordLayer(  # type: ignore[assignment]
            suite,
            read_secret=secrets[_CLIENT_SECRET],
            write_secret=secrets[_SERVER_SECRET],
            written=written,
            alpn=connection.get_alpn_proto_negotiated() or b"",
        )
        connection.set_app_data(None)

    def _write(self, data: bytes) -> None:
        # Every write, gathered or not, goes to OpenSSL through here.
        super()._write(data)
        if not self._receiving:
            self._release()

    def _flushSendBIO(self) -> None:
        # Twisted reads one chunk; read until the BIO is empty, so that
        # afterwards it is known to be.  The records leave at once when
        # nothing is queued before them (a push to an idle device).
        data = self._drain()
        if data:
            if self._handshakeDone and self._secrets is not None:
                # Records left between the handshake's end and the
                # hand-over (a protocol that writes, or closes, as it
                # hears the handshake is done): the hand-over could not
                # count them, and would reuse their nonces.  The
                # connection stays with OpenSSL.
                self._secrets = None
            send_now(self.transport, data)

    def _drain(self) -> bytes:
        """Everything the outgoing BIO holds."""
        chunks = []
        while True:
            try:
                chunks.append(self._tlsConnection.bio_read(_CHUNK))
            except WantReadError:
                break
        data = b"".join(chunks)
        self._held = max(self._held, len(data))
        return data

    def _release(self) -> None:
        if (
            self._held < RELEASE_AT
            or not self._handshakeDone
            or self._lostTLSConnection
            or self.disconnecting
            or not renewable(self._tlsConnection)
        ):
            return
        if renew_bios(self._tlsConnection):
            self._held = 0


def _log_key(connection: Connection, line: bytes) -> None:
    """OpenSSL's key log callback: the line goes to its connection."""
    protocol = connection.get_app_data()
    if isinstance(protocol, LeanTLSProtocol):
        protocol.key_logged(line)


def _whole_records(data: bytes) -> int | None:
    """
    How many records C{data} holds, if it is whole TLS 1.3 protected
    records and nothing else.
    """
    count = at = 0
    while at < len(data):
        if len(data) - at < 5 or data[at] != _PROTECTED:
            return None
        at += 5 + int.from_bytes(data[at + 3 : at + 5], "big")
        count += 1
    return count if at == len(data) else None


class LeanTLSFactory(TLSMemoryBIOFactory):
    """
    Wraps server connections in L{LeanTLSProtocol}, and has the context
    log the traffic secrets that the hand-over needs.
    """

    protocol = LeanTLSProtocol

    def __init__(
        self,
        options: Any,
        is_client: bool,
        wrapped: IProtocolFactory,
        clock: IReactorTime | None = None,
    ) -> None:
        """
        @param options: the server's C{CertificateOptions}.
        @param is_client: must be false.
        @param wrapped: the factory of the protocol inside TLS.
        @param clock: when small writes are gathered until.
        """
        if is_client:
            raise ValueError("LeanTLSFactory makes server connections only")
        super().__init__(options, is_client, wrapped, clock)
        options.getContext().set_keylog_callback(_log_key)
