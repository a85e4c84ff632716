"""
TLS 1.3 record protection after the handshake, in user space: what the
kernel does with kTLS, for a kernel that has no kTLS.

OpenSSL does the handshake.  Afterwards a TLS 1.3 connection needs only
its two traffic secrets and two record counters to protect its records
(RFC 8446, section 5), yet OpenSSL keeps about 21 KiB for it as long as
it lives: the connection object, a record layer each way, cipher
contexts, the session.  L{RecordLayer} takes over from OpenSSL once the
handshake is done and keeps the keys and counters alone, about half a
kilobyte, building a cipher object only for the moment it encrypts or
decrypts (a cached one costs 2.5 KiB and takes under a microsecond to
build).

It stands in for the pyOpenSSL C{Connection} that Twisted's memory-BIO
TLS protocol drives: ciphertext goes in with L{bio_write} and out with
L{bio_read}, plaintext in with L{send} and out with L{recv}, and it
raises pyOpenSSL's exceptions where a connection would.  It does no I/O
and reads no clock.

What it supports is what a server needs after a TLS 1.3 handshake with
no client certificate and no early data: application data, alerts, and
key updates either way (the peer's, and its own every
L{REKEY_AFTER} records, below the AES-GCM usage limit of section 5.5).
Anything else the peer sends is a fatal C{unexpected_message}.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import (
    AESGCM,
    ChaCha20Poly1305,
)
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from OpenSSL.SSL import Error, SysCallError, WantReadError, ZeroReturnError

_Aead = Callable[[bytes], Any]

#: The TLS 1.3 suites, by OpenSSL's name: the AEAD, its key length, and
#: the hash of the key schedule.
SUITES: dict[str, tuple[_Aead, int, type[hashes.HashAlgorithm]]] = {
    "TLS_AES_128_GCM_SHA256": (AESGCM, 16, hashes.SHA256),
    "TLS_AES_256_GCM_SHA384": (AESGCM, 32, hashes.SHA384),
    "TLS_CHACHA20_POLY1305_SHA256": (ChaCha20Poly1305, 32, hashes.SHA256),
}

#: Records sent under one key before this side moves to the next one.
#: Section 5.5 allows 2**24.5 full-size records per AES-GCM key.
REKEY_AFTER = 2**24

#: Largest plaintext in a record, and largest ciphertext after it.
MAX_PLAINTEXT = 2**14
MAX_CIPHERTEXT = MAX_PLAINTEXT + 256

_IV_LENGTH = 12
_TAG_LENGTH = 16

# Record content types (section 5.1).
_ALERT = 21
_HANDSHAKE = 22
_APPLICATION_DATA = 23

# The one post-handshake message a server accepts, and its values.
_KEY_UPDATE = 24
_UPDATE_NOT_REQUESTED = 0
_UPDATE_REQUESTED = 1

# Alerts (section 6): level, and the descriptions this layer sends.
_WARNING = 1
_FATAL = 2
_CLOSE_NOTIFY = 0
_UNEXPECTED_MESSAGE = 10
_BAD_RECORD_MAC = 20
_RECORD_OVERFLOW = 22
_ILLEGAL_PARAMETER = 47
_DECODE_ERROR = 50
_USER_CANCELED = 90

_RECORD_HEADER = struct.Struct("!BHH")
_APPLICATION_HEADER = bytes((_APPLICATION_DATA, 3, 3))


def expand_label(
    algorithm: type[hashes.HashAlgorithm],
    secret: bytes,
    label: bytes,
    length: int,
) -> bytes:
    """HKDF-Expand-Label of section 7.1, with an empty context."""
    full = b"tls13 " + label
    info = struct.pack("!HB", length, len(full)) + full + b"\x00"
    return HKDFExpand(algorithm(), length, info).derive(secret)


class RecordError(Error):
    """
    The peer broke the record protocol; an alert saying how is queued.
    Its arguments are shaped like OpenSSL's error queue, so that code
    written for pyOpenSSL reports it as it would OpenSSL's.
    """

    def __init__(self, reason: str) -> None:
        super().__init__([("TLS", "record layer", reason)])


class _Keys:
    """One direction's traffic secret, key, IV and record counter."""

    __slots__ = ("iv", "key", "secret", "sequence")

    def __init__(self, suite: str, secret: bytes, sequence: int) -> None:
        _, key_length, algorithm = SUITES[suite]
        self.secret = secret
        self.key = expand_label(algorithm, secret, b"key", key_length)
        self.iv = int.from_bytes(
            expand_label(algorithm, secret, b"iv", _IV_LENGTH), "big"
        )
        self.sequence = sequence

    def nonce(self) -> bytes:
        """The next record's nonce (section 5.3); counts the record."""
        nonce = (self.iv ^ self.sequence).to_bytes(_IV_LENGTH, "big")
        self.sequence += 1
        return nonce

    def following(self, suite: str) -> _Keys:
        """The keys after a key update (section 7.2)."""
        algorithm = SUITES[suite][2]
        size = algorithm().digest_size
        return _Keys(
            suite,
            expand_label(algorithm, self.secret, b"traffic upd", size),
            0,
        )


class RecordLayer:
    """
    A TLS 1.3 connection's record protection once its handshake is done,
    with the calls of a pyOpenSSL C{Connection} that Twisted's TLS
    protocol makes.

    @ivar rekey_after: records this side sends under one key.
    """

    __slots__ = (
        "_alpn",
        "_app_data",
        "_closed",
        "_eof",
        "_handshake",
        "_incoming",
        "_outgoing",
        "_peer_closed",
        "_plaintext",
        "_read",
        "_suite",
        "_update_owed",
        "_write",
        "rekey_after",
    )

    def __init__(
        self,
        suite: str,
        read_secret: bytes,
        write_secret: bytes,
        written: int = 0,
        alpn: bytes = b"",
    ) -> None:
        """
        @param suite: the negotiated suite, a key of L{SUITES}.
        @param read_secret: the peer's application traffic secret.
        @param write_secret: this side's application traffic secret.
        @param written: records already sent under C{write_secret} (a
            server's session tickets); none can have been read yet.
        @param alpn: the protocol ALPN settled on, if any.
        """
        if suite not in SUITES:
            raise ValueError(f"not a TLS 1.3 suite: {suite}")
        self._suite = suite
        self._read = _Keys(suite, read_secret, 0)
        self._write = _Keys(suite, write_secret, written)
        self._alpn = alpn
        self._app_data: object = None
        self._incoming = b""
        self._outgoing: list[bytes] = []
        self._plaintext = b""
        self._handshake = b""
        self._closed = False
        self._peer_closed = False
        self._eof = False
        # The peer asked this side to move to its next key: done once,
        # before the next record sent, however many times it asked.
        self._update_owed = False
        self.rekey_after = REKEY_AFTER

    # The ciphertext side.

    def bio_write(self, data: bytes) -> int:
        """Take ciphertext received from the peer."""
        self._incoming = self._incoming + data if self._incoming else data
        return len(data)

    def bio_read(self, size: int) -> bytes:
        """
        Give up to C{size} bytes of ciphertext to send.

        @raise WantReadError: if there is none.
        """
        if not self._outgoing:
            raise WantReadError()
        data = b"".join(self._outgoing)
        if len(data) <= size:
            self._outgoing = []
            return data
        self._outgoing = [data[size:]]
        return data[:size]

    def bio_shutdown(self) -> None:
        """The peer will send nothing more."""
        self._eof = True

    # The plaintext side.

    def recv(self, size: int) -> bytes:
        """
        Give up to C{size} bytes of the peer's application data.

        @raise WantReadError: if no whole record holds any yet.
        @raise ZeroReturnError: once the peer has closed the connection.
        @raise SysCallError: if the stream ended without a close.
        @raise RecordError: if the peer broke the protocol.
        """
        if not self._plaintext:
            self._open_records()
        if self._plaintext:
            data = self._plaintext[:size]
            self._plaintext = self._plaintext[size:]
            return data
        if self._peer_closed:
            raise ZeroReturnError()
        if self._eof:
            raise SysCallError(-1, "Unexpected EOF")
        raise WantReadError()

    def send(self, data: bytes) -> int:
        """
        Protect C{data} in records of at most L{MAX_PLAINTEXT} bytes.

        @return: how many bytes were taken: all of them.
        @raise Error: once this side has closed the connection.
        """
        if self._closed:
            raise Error([("TLS", "record layer", "protocol is shutdown")])
        aead = SUITES[self._suite][0](self._write.key)
        if self._update_owed:
            aead = self._seal_key_update(aead, request=False)
        for start in range(0, len(data), MAX_PLAINTEXT):
            aead = self._seal(
                aead, data[start : start + MAX_PLAINTEXT], _APPLICATION_DATA
            )
        return len(data)

    def shutdown(self) -> bool:
        """
        Send a close alert, once.

        @return: whether the peer has closed too.
        """
        if not self._closed:
            self._send_alert(_WARNING, _CLOSE_NOTIFY)
        return self._peer_closed

    def update_keys(self, request: bool = False) -> None:
        """
        Move this side to its next key (section 4.6.3), asking the peer to
        move too if C{request}.  Nothing is sent once closed.
        """
        if self._closed:
            return
        aead = SUITES[self._suite][0](self._write.key)
        self._seal_key_update(aead, request)

    # What a pyOpenSSL Connection answers about itself.

    def do_handshake(self) -> None:
        """The handshake is done: nothing to do."""

    def get_peer_certificate(self) -> None:
        """Devices present no certificate."""
        return None

    def get_alpn_proto_negotiated(self) -> bytes:
        """The protocol ALPN settled on, or empty."""
        return self._alpn

    def get_protocol_version_name(self) -> str:
        """Always C{TLSv1.3}."""
        return "TLSv1.3"

    def get_cipher_name(self) -> str:
        """The negotiated suite."""
        return self._suite

    def set_app_data(self, data: object) -> None:
        """Keep C{data} for L{get_app_data}."""
        self._app_data = data

    def get_app_data(self) -> object:
        """What L{set_app_data} kept."""
        return self._app_data

    # Sending.

    def _seal(self, aead: Any, content: bytes, kind: int) -> Any:
        """
        Queue one record holding C{content} of type C{kind}; return the
        cipher to use for the next one (a new one after a key update).
        """
        inner = content + bytes((kind,))
        header = _APPLICATION_HEADER + (len(inner) + _TAG_LENGTH).to_bytes(
            2, "big"
        )
        self._outgoing.append(header)
        self._outgoing.append(aead.encrypt(self._write.nonce(), inner, header))
        if self._write.sequence >= self.rekey_after and not self._closed:
            return self._seal_key_update(aead, False)
        return aead

    def _seal_key_update(self, aead: Any, request: bool) -> Any:
        # The KeyUpdate goes under the old key; what follows, the new.
        # Any KeyUpdate of this side's answers a request of the peer's.
        self._update_owed = False
        message = struct.pack(
            "!BHBB",
            _KEY_UPDATE,
            0,
            1,
            _UPDATE_REQUESTED if request else _UPDATE_NOT_REQUESTED,
        )
        inner = message + bytes((_HANDSHAKE,))
        header = _APPLICATION_HEADER + (len(inner) + _TAG_LENGTH).to_bytes(
            2, "big"
        )
        self._outgoing.append(header)
        self._outgoing.append(aead.encrypt(self._write.nonce(), inner, header))
        self._write = self._write.following(self._suite)
        return SUITES[self._suite][0](self._write.key)

    def _send_alert(self, level: int, description: int) -> None:
        # Closed first, so that no key update follows the alert.
        self._closed = True
        aead = SUITES[self._suite][0](self._write.key)
        self._seal(aead, bytes((level, description)), _ALERT)

    def _fail(self, description: int, reason: str) -> RecordError:
        """Queue a fatal alert, and say why the connection failed."""
        if not self._closed:
            self._send_alert(_FATAL, description)
        self._incoming = b""
        return RecordError(reason)

    # Receiving.

    def _open_records(self) -> None:
        """Open every whole record received, into C{_plaintext}."""
        data = self._incoming
        at = 0
        opened = []
        aead = None
        try:
            while len(data) - at >= 5 and not self._peer_closed:
                kind, _, length = _RECORD_HEADER.unpack_from(data, at)
                if length > MAX_CIPHERTEXT:
                    raise self._fail(_RECORD_OVERFLOW, "record overflow")
                if kind != _APPLICATION_DATA:
                    raise self._fail(
                        _UNEXPECTED_MESSAGE, f"unexpected record type {kind}"
                    )
                end = at + 5 + length
                if end > len(data):
                    break
                if aead is None:
                    aead = SUITES[self._suite][0](self._read.key)
                try:
                    inner = aead.decrypt(
                        self._read.nonce(),
                        data[at + 5 : end],
                        data[at : at + 5],
                    )
                except InvalidTag:
                    raise self._fail(
                        _BAD_RECORD_MAC, "bad record mac"
                    ) from None
                at = end
                if len(inner) > MAX_PLAINTEXT + 1:
                    # Content, type and padding together (section 5.4).
                    raise self._fail(_RECORD_OVERFLOW, "record overflow")
                content, kind = _inner(inner)
                if not kind:
                    raise self._fail(_UNEXPECTED_MESSAGE, "bad inner record")
                if self._handshake and kind != _HANDSHAKE:
                    # A handshake message's fragments come one after
                    # another, nothing between them (section 5.1).
                    raise self._fail(
                        _UNEXPECTED_MESSAGE,
                        "record inside a handshake message",
                    )
                if not content and kind != _APPLICATION_DATA:
                    # Only application data may come in empty records.
                    raise self._fail(_UNEXPECTED_MESSAGE, "empty record")
                if kind == _APPLICATION_DATA:
                    opened.append(content)
                elif kind == _HANDSHAKE:
                    if self._handshake_received(content):
                        aead = None
                elif kind == _ALERT:
                    self._alert_received(content)
                else:
                    raise self._fail(
                        _UNEXPECTED_MESSAGE, f"unexpected content {kind}"
                    )
        finally:
            if self._incoming:
                self._incoming = data[at:]
            if opened:
                self._plaintext += b"".join(opened)

    def _handshake_received(self, content: bytes) -> bool:
        """
        Take post-handshake messages; return whether the read key moved.
        """
        data = self._handshake + content
        moved = False
        while len(data) >= 4:
            kind = data[0]
            length = int.from_bytes(data[1:4], "big")
            if kind != _KEY_UPDATE:
                raise self._fail(
                    _UNEXPECTED_MESSAGE, f"unexpected handshake {kind}"
                )
            if length != 1:
                raise self._fail(_DECODE_ERROR, "malformed key update")
            if len(data) < 5:
                break
            request = data[4]
            if request not in (_UPDATE_NOT_REQUESTED, _UPDATE_REQUESTED):
                raise self._fail(_ILLEGAL_PARAMETER, "bad key update request")
            if len(data) > 5:
                # A key update ends its record: what follows it in the same
                # record was protected under the old key (section 5.1).
                raise self._fail(
                    _UNEXPECTED_MESSAGE, "data after a key update"
                )
            self._read = self._read.following(self._suite)
            moved = True
            if request == _UPDATE_REQUESTED:
                # Answered before the next record this side sends (section
                # 4.6.3), once for any number of requests: a peer that
                # asks without reading makes nothing pile up.
                self._update_owed = True
            data = b""
        self._handshake = data
        return moved

    def _alert_received(self, content: bytes) -> None:
        if len(content) != 2:
            raise self._fail(_DECODE_ERROR, "malformed alert")
        description = content[1]
        if description == _CLOSE_NOTIFY:
            self._peer_closed = True
        elif description != _USER_CANCELED:
            # Every other alert in TLS 1.3 is fatal; answer none.
            self._closed = True
            self._incoming = b""
            raise RecordError(f"peer sent alert {description}")


def _inner(inner: bytes) -> tuple[bytes, int]:
    """
    Split TLSInnerPlaintext into its content and its type, which is 0
    if the record has none (all padding).
    """
    body = inner.rstrip(b"\0")
    if not body:
        return b"", 0
    return body[:-1], body[-1]
