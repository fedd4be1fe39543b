"""recvmmsg/sendmmsg for IPv4 UDP sockets through ctypes (Python's socket module has neither).

A :class:`MessageVector` preallocates everything one batch needs: one
contiguous data area cut into fixed-size slots, and per slot an ``iovec``, a
``sockaddr_in`` and a ``struct mmsghdr`` pointing at them. A server keeps two
(receive and send) for its whole life, so a batch allocates no C memory and
makes no Python buffer per message.

recvmmsg's timeout is checked only after a datagram has arrived, so a caller
waiting for a full batch can sleep forever on a quiet socket: call it with
``MSG_DONTWAIT`` after ``poll`` said readable, and take what is there.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import socket
import struct

MSG_DONTWAIT = 0x40
MSG_TRUNC = 0x20
_EAGAIN = (errno.EAGAIN, errno.EWOULDBLOCK)


class Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class SockaddrIn(ctypes.Structure):
    """struct sockaddr_in; port and address stay in network byte order."""

    _fields_ = [
        ("sin_family", ctypes.c_ushort),
        ("sin_port", ctypes.c_uint16),
        ("sin_addr", ctypes.c_uint32),
        ("sin_zero", ctypes.c_ubyte * 8),
    ]


class Msghdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.POINTER(Iovec)),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class Mmsghdr(ctypes.Structure):
    _fields_ = [("msg_hdr", Msghdr), ("msg_len", ctypes.c_uint)]


class Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _load_libc() -> ctypes.CDLL:
    """libc with the prototypes declared, so ctypes converts and checks every argument."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    vec = ctypes.c_void_p  # an address into a Mmsghdr array, so a call can start mid-array
    libc.recvmmsg.argtypes = [ctypes.c_int, vec, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    libc.recvmmsg.restype = ctypes.c_int
    libc.sendmmsg.argtypes = [ctypes.c_int, vec, ctypes.c_uint, ctypes.c_int]
    libc.sendmmsg.restype = ctypes.c_int
    libc.sendto.argtypes = [
        ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
        ctypes.c_void_p, ctypes.c_uint32,
    ]  # fmt: skip
    libc.sendto.restype = ctypes.c_ssize_t
    return libc


_LIBC = _load_libc()
SOCKADDR_IN_SIZE = ctypes.sizeof(SockaddrIn)


class MessageVector:
    """count message slots of size bytes each, with their C headers, for one batch call."""

    def __init__(self, count: int, size: int) -> None:
        if count < 1 or size < 1:
            raise ValueError(f"count and size must be >= 1, got {count}, {size}")
        self.count = count
        self.received = 0  # slots the last recvmmsg filled
        self.size = size
        self.data = bytearray(count * size)
        self._area = (ctypes.c_char * len(self.data)).from_buffer(self.data)
        base = ctypes.addressof(self._area)
        self.iovecs = (Iovec * count)()
        self.names = (SockaddrIn * count)()
        self.headers = (Mmsghdr * count)()
        self.timeout = Timespec()  # recvmmsg writes the time left into it
        view = memoryview(self.data)
        self.slots = [view[i * size : (i + 1) * size] for i in range(count)]
        for i in range(count):
            self.iovecs[i].iov_base = base + i * size
            self.iovecs[i].iov_len = size
            hdr = self.headers[i].msg_hdr
            hdr.msg_iov = ctypes.pointer(self.iovecs[i])
            hdr.msg_iovlen = 1
            hdr.msg_name = ctypes.addressof(self.names[i])
            hdr.msg_namelen = SOCKADDR_IN_SIZE

    def length(self, i: int) -> int:
        """Bytes of message i (after recvmmsg: received; after sendmmsg: sent)."""
        length: int = self.headers[i].msg_len
        return length

    def truncated(self, i: int) -> bool:
        """Whether received message i was longer than its slot."""
        return bool(self.headers[i].msg_hdr.msg_flags & MSG_TRUNC)

    def address(self, i: int) -> tuple[str, int]:
        """Slot i's peer as Python's socket module writes it (for tests and reports)."""
        name = self.names[i]
        ip = socket.inet_ntoa(struct.pack("=I", name.sin_addr))
        return ip, socket.ntohs(name.sin_port)

    def name_address(self, i: int) -> int:
        """The C address of slot i's sockaddr, to send a response to the same peer."""
        return ctypes.addressof(self.names[i])

    def restore_names(self) -> None:
        """Reset the name length the kernel rewrote in the slots the last recvmmsg filled."""
        for i in range(self.received):
            self.headers[i].msg_hdr.msg_namelen = SOCKADDR_IN_SIZE
        self.received = 0

    def prepare_send(self, i: int, length: int, name: int) -> None:
        """Make slot i a message of its first length bytes to the sockaddr at C address name."""
        if not 0 <= length <= self.size:
            raise ValueError(f"length {length} does not fit a {self.size}-byte slot")
        self.iovecs[i].iov_len = length
        hdr = self.headers[i].msg_hdr
        hdr.msg_name = name
        hdr.msg_namelen = SOCKADDR_IN_SIZE


def _raise_errno(call: str) -> None:
    err = ctypes.get_errno()
    raise OSError(err, f"{call}: {os.strerror(err)}")


def recvmmsg(
    fd: int, vec: MessageVector, count: int, flags: int = MSG_DONTWAIT, timeout: float | None = None
) -> int:
    """Receive up to count datagrams into vec's first slots; 0 if none is queued (EAGAIN).

    timeout (seconds) bounds the batch only once datagrams are arriving (see module doc).
    """
    count = min(count, vec.count)
    vec.restore_names()
    spec = None
    if timeout is not None:
        vec.timeout.tv_sec = int(timeout)
        vec.timeout.tv_nsec = int((timeout - int(timeout)) * 1e9)
        spec = ctypes.byref(vec.timeout)
    got: int = _LIBC.recvmmsg(fd, ctypes.addressof(vec.headers), count, flags, spec)
    if got < 0:
        if ctypes.get_errno() in _EAGAIN:
            return 0
        _raise_errno("recvmmsg")
    vec.received = got
    return got


def sendmmsg(fd: int, vec: MessageVector, count: int, start: int = 0, flags: int = 0) -> int:
    """Send vec's slots start..count-1 (prepared with prepare_send); how many the kernel took."""
    if not 0 <= start < count <= vec.count:
        raise ValueError(f"bad slot range {start}..{count} of {vec.count}")
    first = ctypes.addressof(vec.headers) + start * ctypes.sizeof(Mmsghdr)
    sent: int = _LIBC.sendmmsg(fd, first, count - start, flags)
    if sent < 0:
        _raise_errno("sendmmsg")
    return sent


def sendto(fd: int, vec: MessageVector, i: int, flags: int = 0) -> int:
    """Send slot i alone with sendto(2) to its prepared peer; bytes sent."""
    hdr = vec.headers[i].msg_hdr
    iov = vec.iovecs[i]
    sent: int = _LIBC.sendto(fd, iov.iov_base, iov.iov_len, flags, hdr.msg_name, hdr.msg_namelen)
    if sent < 0:
        _raise_errno("sendto")
    return sent


def sendmmsg_all(fd: int, vec: MessageVector, count: int) -> tuple[int, int]:
    """Send slots 0..count-1, skipping any the kernel refuses; (messages sent, errors).

    sendmmsg stops at the first message that fails and reports the ones before
    it; the failing one is then the first of the next call, whose error says why.
    """
    start = sent = errors = 0
    while start < count:
        try:
            done = sendmmsg(fd, vec, count, start)
        except OSError:
            errors += 1
            start += 1
            continue
        if done == 0:
            errors += 1
        sent += done
        start += done or 1
    return sent, errors
