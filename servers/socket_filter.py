"""Classic BPF socket filters for the PF_PACKET server's sockets.

The ring's filter keeps the service's traffic: IPv4 UDP to the server's address
and port, plus every non-first fragment to the server's address (those carry no
UDP header, so the port cannot be checked; reassembly drops the ones that belong
to other datagrams). The guard socket's filter drops everything.
"""

from __future__ import annotations

import ctypes
import socket
import struct

ETH_P_IP = 0x0800
SO_ATTACH_FILTER = 26

BpfInsn = tuple[int, int, int, int]

BPF_LD_W_ABS = 0x20
BPF_LD_H_ABS = 0x28
BPF_LD_B_ABS = 0x30
BPF_LD_H_IND = 0x48
BPF_LDX_B_MSH = 0xB1
BPF_JEQ_K = 0x15
BPF_JSET_K = 0x45
BPF_RET_K = 0x06
BPF_ACCEPT = 0x40000


def udp_service_filter(server_ip: str, port: int) -> list[BpfInsn]:
    """Classic BPF: accept IPv4 UDP to server_ip:port and non-first fragments to server_ip.

    Offsets are from the Ethernet header (SOCK_RAW): ethertype 12, protocol 23,
    flags/offset 20, destination address 30, then the UDP destination port at
    14 + IHL + 2 via the IP header length loaded into X.
    """
    ip = struct.unpack("!I", socket.inet_aton(server_ip))[0]
    return [
        (BPF_LD_H_ABS, 0, 0, 12),
        (BPF_JEQ_K, 0, 10, ETH_P_IP),
        (BPF_LD_W_ABS, 0, 0, 30),
        (BPF_JEQ_K, 0, 8, ip),
        (BPF_LD_B_ABS, 0, 0, 23),
        (BPF_JEQ_K, 0, 6, socket.IPPROTO_UDP),
        (BPF_LD_H_ABS, 0, 0, 20),
        (BPF_JSET_K, 3, 0, 0x1FFF),
        (BPF_LDX_B_MSH, 0, 0, 14),
        (BPF_LD_H_IND, 0, 0, 16),
        (BPF_JEQ_K, 0, 1, port),
        (BPF_RET_K, 0, 0, BPF_ACCEPT),
        (BPF_RET_K, 0, 0, 0),
    ]


DROP_ALL_FILTER: list[BpfInsn] = [(BPF_RET_K, 0, 0, 0)]


def attach_filter(sock: socket.socket, program: list[BpfInsn]) -> None:
    """SO_ATTACH_FILTER a classic BPF program (the kernel copies it, so the buffer is temporary)."""
    code = b"".join(struct.pack("=HBBI", *insn) for insn in program)
    buf = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("=HxxxxxxQ", len(program), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
