"""
Bytes-in, bytes-out checks of the benchmark's MQTT codec, so that a
figure against Mosquitto never rests on a misread packet.

Run C{.venv/bin/python -m pytest -q bench/test_lean_mqtt.py}; no broker
or socket is needed.
"""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from lean_mqtt import (
    PacketReader,
    ProtocolError,
    connect_packet,
    decode_length,
    encode_length,
    puback_packet,
    publish_packet,
    subscribe_packet,
)

#: The edges of each length of the variable-length integer.
EDGES = [0, 1, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, 268_435_455]


@pytest.mark.parametrize("n", EDGES)
def test_length_round_trip(n: int) -> None:
    """Every remaining length decodes to itself, trailing bytes left."""
    encoded = encode_length(n)
    assert decode_length(encoded + b"\x00", 0) == (n, len(encoded))


def test_length_sizes() -> None:
    """Lengths take one to four bytes at the edges the standard gives."""
    sizes = [len(encode_length(n)) for n in EDGES]
    assert sizes == [1, 1, 1, 2, 2, 3, 3, 4, 4]


def test_length_incomplete() -> None:
    """A length cut short asks for more bytes instead of guessing."""
    assert decode_length(b"\x80\x80", 0) is None


def test_length_too_long() -> None:
    """A fifth length byte is refused."""
    with pytest.raises(ProtocolError):
        decode_length(b"\x80\x80\x80\x80\x01", 0)


def test_connect_bytes() -> None:
    """CONNECT carries the protocol name, level 4, flags, keepalive, id."""
    assert connect_packet("c", True, 60) == (
        b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01c"
    )
    assert connect_packet("c", False, 0)[9] == 0x00


def test_subscribe_bytes() -> None:
    """SUBSCRIBE has the reserved flags 0b0010 and asks for a QoS."""
    assert subscribe_packet(7, "t", 1) == b"\x82\x06\x00\x07\x00\x01t\x01"


def test_publish_bytes() -> None:
    """A QoS 1 PUBLISH carries its packet id; a QoS 0 one does not."""
    assert publish_packet("t", b"p", 1, 258) == b"\x32\x06\x00\x01t\x01\x02p"
    assert publish_packet("t", b"p") == b"\x30\x04\x00\x01tp"
    assert puback_packet(258) == b"\x40\x02\x01\x02"


def test_reader_whole_and_byte_at_a_time() -> None:
    """The reader finds the same packets in one chunk or byte by byte."""
    stream = (
        publish_packet("a", b"x" * 300, 1, 1)
        + puback_packet(9)
        + publish_packet("b", b"", 0)
    )
    whole = PacketReader().feed(stream)
    reader = PacketReader()
    single = []
    for i in range(len(stream)):
        single += reader.feed(stream[i : i + 1])
    assert whole == single
    assert [first >> 4 for first, _ in whole] == [3, 4, 3]
    assert whole[1][1] == b"\x00\x09"


def test_reader_keeps_trailing_bytes() -> None:
    """Bytes of an unfinished packet wait for the rest of it."""
    reader = PacketReader()
    packet = puback_packet(1)
    assert reader.feed(packet + packet[:3]) == [(0x40, b"\x00\x01")]
    assert reader.feed(packet[3:]) == [(0x40, b"\x00\x01")]


def test_reader_refuses_long_packet_from_header() -> None:
    """A packet over the maximum is refused from its header alone."""
    reader = PacketReader(max_packet=1000)
    with pytest.raises(ProtocolError):
        reader.feed(b"\x30" + encode_length(1001))
