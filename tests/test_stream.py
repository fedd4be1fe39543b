"""Length-prefixed framing of the TCP transport (no root)."""

from __future__ import annotations

import socket
import time

import pytest

from servers.channels import StreamChannel
from servers.payload import MAX_DATAGRAM, build_request
from servers.stream import PREFIX_SIZE, Deframer, FramingError, frame, prefix


def test_frame_is_big_endian_length_then_payload() -> None:
    assert frame(b"abc") == b"\x00\x00\x00\x03abc"
    assert frame(b"") == b"\x00\x00\x00\x00"
    assert prefix(MAX_DATAGRAM) == MAX_DATAGRAM.to_bytes(4, "big")
    with pytest.raises(FramingError):
        prefix(MAX_DATAGRAM + 1)


def test_deframer_cuts_whole_messages_out_of_any_chunking() -> None:
    messages = [build_request(1, seq, size) for seq, size in enumerate((16, 512, 8192, 17))]
    stream = b"".join(frame(m) for m in messages)
    for chunk in (1, 3, 4, 5, 511, len(stream)):
        deframer = Deframer()
        out = []
        for start in range(0, len(stream), chunk):
            deframer.feed(stream[start : start + chunk])
            while (message := deframer.next()) is not None:
                out.append(message)
        assert out == messages, f"chunk {chunk}"
        assert deframer.pending == 0


def test_deframer_holds_a_partial_message() -> None:
    deframer = Deframer()
    deframer.feed(frame(b"hello")[: PREFIX_SIZE + 2])
    assert deframer.next() is None
    assert deframer.pending == PREFIX_SIZE + 2
    deframer.feed(b"llo")
    assert deframer.next() == b"hello"
    assert deframer.next() is None


def test_deframer_refuses_an_impossible_length() -> None:
    deframer = Deframer()
    deframer.feed((MAX_DATAGRAM + 1).to_bytes(4, "big"))
    with pytest.raises(FramingError):
        deframer.next()


def test_stream_channel_keeps_a_message_cut_by_a_timeout() -> None:
    """A receive that times out mid-message returns None; the next one completes it."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=1.0)
        server, _ = listener.accept()
    with client, server:
        channel = StreamChannel(client)
        assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        data = frame(b"x" * 100)
        server.sendall(data[:50])
        assert channel.receive(time.monotonic_ns() + 20_000_000) is None
        server.sendall(data[50:])
        assert channel.receive(time.monotonic_ns() + 1_000_000_000) == b"x" * 100
        channel.send(b"ping", time.monotonic_ns() + 1_000_000_000)
        assert server.recv(100) == frame(b"ping")
        server.close()
        with pytest.raises(EOFError):
            channel.receive(time.monotonic_ns() + 1_000_000_000)
