"""The recvmmsg/sendmmsg ctypes layer and the batch server's response writer (no root)."""

from __future__ import annotations

import ctypes
import select
import socket
import time
from collections.abc import Iterator

import pytest

from servers import mmsg
from servers.mmsg_server import write_response
from servers.payload import build_request, build_response


def test_struct_layout_matches_the_kernel_abi() -> None:
    """x86-64/aarch64 LP64 layout of <sys/socket.h>, <netinet/in.h>, <sys/uio.h>."""
    assert ctypes.sizeof(mmsg.Iovec) == 16
    assert ctypes.sizeof(mmsg.SockaddrIn) == 16
    assert ctypes.sizeof(mmsg.Msghdr) == 56
    assert ctypes.sizeof(mmsg.Mmsghdr) == 64
    assert mmsg.Msghdr.msg_iov.offset == 16
    assert mmsg.Msghdr.msg_control.offset == 32
    assert mmsg.Msghdr.msg_flags.offset == 48
    assert mmsg.Mmsghdr.msg_len.offset == 56
    assert mmsg.SockaddrIn.sin_addr.offset == 4


def test_vector_slots_point_into_one_preallocated_area() -> None:
    vec = mmsg.MessageVector(4, 100)
    base = ctypes.addressof(ctypes.c_char.from_buffer(vec.data))
    for i in range(4):
        assert vec.iovecs[i].iov_base == base + 100 * i
        assert vec.iovecs[i].iov_len == 100
        hdr = vec.headers[i].msg_hdr
        assert ctypes.addressof(hdr.msg_iov.contents) == ctypes.addressof(vec.iovecs[i])
        assert hdr.msg_name == vec.name_address(i)
        assert len(vec.slots[i]) == 100
    with pytest.raises(ValueError):
        mmsg.MessageVector(0, 100)
    with pytest.raises(ValueError):
        vec.prepare_send(0, 101, vec.name_address(0))


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A non-blocking server socket and a client socket on loopback."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with server, client:
        server.bind(("127.0.0.1", 0))
        server.setblocking(False)
        client.bind(("127.0.0.1", 0))
        client.settimeout(1.0)
        yield server, client


def wait_queued(sock: socket.socket) -> None:
    """Until the datagrams just sent are queued (loopback delivery may lag the send a little)."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    assert poller.poll(1000), "nothing arrived"
    time.sleep(0.02)


def test_recvmmsg_takes_what_is_queued_and_nothing_blocks(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server, client = pair
    vec = mmsg.MessageVector(8, 2048)
    assert mmsg.recvmmsg(server.fileno(), vec, 8, timeout=0.01) == 0, "EAGAIN is 0, not an error"
    for i in range(5):
        client.sendto(bytes([i]) * (100 + i), server.getsockname())
    wait_queued(server)
    got = mmsg.recvmmsg(server.fileno(), vec, 8, timeout=0.01)
    assert got == 5
    assert [vec.length(i) for i in range(got)] == [100, 101, 102, 103, 104]
    assert [bytes(vec.slots[i][: vec.length(i)]) for i in range(got)] == [
        bytes([i]) * (100 + i) for i in range(5)
    ]
    assert {vec.address(i) for i in range(got)} == {client.getsockname()}
    assert not any(vec.truncated(i) for i in range(got))


def test_recvmmsg_stops_at_count_and_flags_truncation(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server, client = pair
    vec = mmsg.MessageVector(4, 64)
    for _ in range(3):
        client.sendto(b"x" * 100, server.getsockname())
    wait_queued(server)
    assert mmsg.recvmmsg(server.fileno(), vec, 2) == 2
    assert vec.truncated(0) and vec.length(0) == 64
    assert mmsg.recvmmsg(server.fileno(), vec, 4) == 1


@pytest.mark.parametrize("batched", [True, False])
def test_responses_go_back_to_each_sender(
    pair: tuple[socket.socket, socket.socket], batched: bool
) -> None:
    server, client = pair
    received, replies = mmsg.MessageVector(4, 2048), mmsg.MessageVector(4, 2048)
    for seq in range(3):
        client.sendto(build_request(7, seq, 512), server.getsockname())
    wait_queued(server)
    got = mmsg.recvmmsg(server.fileno(), received, 4)
    assert got == 3
    for i in range(got):
        request = received.slots[i][: received.length(i)]
        assert write_response(request, replies.slots[i], 1024)
        replies.prepare_send(i, 1024, received.name_address(i))
    if batched:
        assert mmsg.sendmmsg_all(server.fileno(), replies, got) == (3, 0)
    else:
        assert [mmsg.sendto(server.fileno(), replies, i) for i in range(got)] == [1024] * 3
    answers = [client.recv(4096) for _ in range(3)]
    assert answers == [build_response(build_request(7, seq, 512), 1024) for seq in range(3)]


def test_sendmmsg_all_skips_a_refused_message(pair: tuple[socket.socket, socket.socket]) -> None:
    """A message too big for UDP fails alone; the ones after it still go."""
    server, client = pair
    vec = mmsg.MessageVector(3, 70000)
    peer = mmsg.MessageVector(1, 16)
    addr, port = client.getsockname()
    peer.names[0].sin_family = socket.AF_INET
    peer.names[0].sin_port = socket.htons(port)
    peer.names[0].sin_addr = int.from_bytes(socket.inet_aton(addr), "little")
    for i, length in enumerate((10, 70000, 20)):
        vec.prepare_send(i, length, peer.name_address(0))
    assert mmsg.sendmmsg_all(server.fileno(), vec, 3) == (2, 1)
    assert [len(client.recv(100)) for _ in range(2)] == [10, 20]


def test_write_response_is_build_response_without_allocating() -> None:
    out = memoryview(bytearray(9000))
    request = build_request(3, 12345, 512)
    assert write_response(memoryview(request), out, 8192)
    assert bytes(out[:8192]) == build_response(request, 8192)
    assert not write_response(memoryview(b"not a request of ours"), out, 8192)
