"""
TLS for device connections: Twisted's memory-BIO TLS protocol, made to
give back the buffers that an idle connection does not need.

pyOpenSSL feeds OpenSSL through two memory BIOs, one each way.  A memory
BIO keeps a buffer as large as the most it ever held at once (a third
more, as OpenSSL rounds up) for the life of the connection: the
handshake's certificate flight, the client's hello, the largest batch of
frames.  With ten thousand idle devices that is tens of megabytes of
buffers holding nothing.  L{LeanTLSProtocol} swaps both BIOs for fresh,
empty ones whenever they held more than L{RELEASE_AT} bytes and are
empty again: right after the handshake, and after any large burst.

OpenSSL's own record buffers need no such help: Twisted's
C{CertificateOptions} already sets C{MODE_RELEASE_BUFFERS}, so OpenSSL
frees them whenever they are empty.

What an idle connection still keeps is OpenSSL's state, about 21 KiB
with the OpenSSL that cryptography bundles (4.0): the connection object
(6 KiB), one record layer each way (4.3 KiB each), the two AES-GCM
contexts, the session, the key shares and the handshake digests.  None
of it can be freed while the connection lives; only handing the keys to
the kernel (kTLS) or a leaner OpenSSL build would shrink it.
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
from twisted.internet.interfaces import ITransport
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOFactory

#: Bytes a BIO may have held before its buffer is worth giving back.  A
#: ping and its pong stay far below; the handshake goes above.
RELEASE_AT = 1024

#: Most bytes read from the outgoing BIO at a time.
_CHUNK = 2**15


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
    A server's TLS layer that releases its BIO buffers once they are
    empty after holding more than L{RELEASE_AT} bytes.  Otherwise it is
    Twisted's default TLS layer, small writes gathered until the reactor
    next turns included.

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
    __slots__ = ("_held", "_receiving")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._held = 0
        self._receiving = False

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

    def dataReceived(self, data: bytes) -> None:
        self._held = max(self._held, len(data))
        self._receiving = True
        try:
            super().dataReceived(data)
        finally:
            self._receiving = False
        self._release()

    def _write(self, data: bytes) -> None:
        # Every write, gathered or not, goes to OpenSSL through here.
        super()._write(data)
        if not self._receiving:
            self._release()

    def _flushSendBIO(self) -> None:
        # Twisted reads one chunk; read until the BIO is empty, so that
        # afterwards it is known to be.
        chunks = []
        while True:
            try:
                chunks.append(self._tlsConnection.bio_read(_CHUNK))
            except WantReadError:
                break
        if chunks:
            data = b"".join(chunks)
            self._held = max(self._held, len(data))
            self.transport.write(data)  # type: ignore[union-attr]

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


class LeanTLSFactory(TLSMemoryBIOFactory):
    """Wraps connections in L{LeanTLSProtocol}."""

    protocol = LeanTLSProtocol
