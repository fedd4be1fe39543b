"""Faults in a test's own network namespaces, and the kernel's own counters there.

- :class:`FragmentDrop`: an nftables ``netdev`` ingress table on a namespace's veth that
  drops fragments (a share of all of them, or exactly the first, a middle or the last
  fragment of a share of the datagrams); removed on every exit path, and its counter
  says how many it dropped.
- :func:`craft`: IPv4 fragments of UDP datagrams written through a raw socket from
  inside a namespace, in any order, duplicated, overlapping or delayed.
- :class:`HeldNamespace`: a namespace kept alive by a file descriptor after its name
  is gone (``stackprof trace`` removes its own at exit), whose counters can still be
  read once the kernel's reassembly timers have run.
- :func:`snmp`: ``/proc/net/snmp`` and ``/proc/net/netstat`` of a namespace.

Traffic goes only between namespaces the test made (or the run under test made).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

NETNS_DIR = Path("/run/netns")
MTU_PAYLOAD = 1480  # IP payload per fragment at MTU 1500


def netns_path(netns: str) -> str:
    """A namespace's file: /run/netns/NAME for a name, else the path given (a held one's)."""
    return netns if "/" in netns else str(NETNS_DIR / netns)


def in_netns(netns: str, *cmd: str, stdin: str | None = None, timeout: float = 30) -> str:
    """Run cmd inside a namespace (a name or a path); its stdout (CalledProcessError if
    it fails)."""
    proc = subprocess.run(
        ["nsenter", f"--net={netns_path(netns)}", *cmd],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, proc.args, proc.stdout, proc.stderr)
    return proc.stdout


def parse_snmp(text: str) -> dict[str, int]:
    """'Ip:ReasmTimeout' -> value, from /proc/net/snmp or /proc/net/netstat text."""
    lines = text.splitlines()
    out: dict[str, int] = {}
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        keys, nums = names.split(), values.split()
        for key, num in zip(keys[1:], nums[1:], strict=False):
            with contextlib.suppress(ValueError):
                out[keys[0] + key] = int(num)
    return out


def snmp(netns: str) -> dict[str, int]:
    """The IP, ICMP, UDP and IpExt counters of a namespace."""
    return parse_snmp(in_netns(netns, "cat", "/proc/net/snmp", "/proc/net/netstat"))


def set_reassembly(netns: str, seconds: int, memory: int = 64 << 20) -> None:
    """How long a namespace keeps an incomplete reassembly (net.ipv4.ipfrag_time), and
    the memory its pending reassemblies may hold (net.ipv4.ipfrag_high_thresh, 4 MiB by
    default): at 2% fragment loss a second's incomplete 8 KiB datagrams come near it,
    and past it the kernel refuses new fragments (counted per fragment in ReasmFails)."""
    in_netns(netns, "sysctl", "-q", "-w", f"net.ipv4.ipfrag_high_thresh={memory}")
    in_netns(netns, "sysctl", "-q", "-w", f"net.ipv4.ipfrag_time={seconds}")


class HeldNamespace:
    """A namespace kept alive by an open descriptor, usable after its name is removed:
    ``path`` names it for :func:`in_netns`, :func:`snmp` and the others here."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.fd = os.open(NETNS_DIR / name, os.O_RDONLY)
        self.path = f"/proc/{os.getpid()}/fd/{self.fd}"

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> HeldNamespace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# Which fragments a rule matches: ip frag-off holds the flags (MF 0x2000) and the offset.
FRAGMENT_MATCH = {
    "any": "ip frag-off & 0x3fff != 0",
    "first": "ip frag-off & 0x1fff == 0 ip frag-off & 0x2000 != 0",
    "middle": "ip frag-off & 0x1fff != 0 ip frag-off & 0x2000 != 0",
    "last": "ip frag-off & 0x1fff != 0 ip frag-off & 0x2000 == 0",
}


class FragmentDrop:
    """Drop fragments arriving on a veth: `percent` of the `which` fragments (a random
    share), or, for 'middle' with `offset`, exactly the fragment at that offset (bytes).
    A context manager: the table is removed however the block ends."""

    TABLE = "stackprof_faults"

    def __init__(
        self, netns: str, device: str, which: str = "any", percent: int = 100, offset: int = -1
    ) -> None:
        match = FRAGMENT_MATCH[which]
        if offset >= 0:
            match = f"ip frag-off & 0x1fff == {offset // 8}"
        share = f" numgen random mod 100 < {percent}" if percent < 100 else ""
        self.netns, self.device = netns, device
        self.rule = f"{match}{share} counter drop"

    def install(self) -> FragmentDrop:
        text = (
            f"table netdev {self.TABLE} {{ chain ingress {{ type filter hook ingress "
            f'device "{self.device}" priority 0; {self.rule}; }}; }}'
        )
        in_netns(self.netns, "nft", "-f", "-", stdin=text)
        return self

    def dropped(self) -> int:
        """Packets the rule dropped so far."""
        doc = json.loads(in_netns(self.netns, "nft", "-j", "list", "table", "netdev", self.TABLE))
        return sum(
            item["rule"]["expr"][-2]["counter"]["packets"]
            for item in doc["nftables"]
            if "rule" in item
        )

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError, FileNotFoundError):
            in_netns(self.netns, "nft", "delete", "table", "netdev", self.TABLE)

    def __enter__(self) -> FragmentDrop:
        try:
            return self.install()
        except BaseException:
            self.remove()
            raise

    def __exit__(self, *exc: object) -> None:
        self.remove()


# Run inside the sending namespace: the steps of a plan, each one IPv4 fragment of
# UDP datagram n (IP ID 0x4000 + n, its payload n's low byte repeated, UDP checksum
# 0: none) written through a raw socket: [n, offset_bytes, length_bytes,
# more_fragments, sleep_s_after].
_CRAFT = r"""
import json, socket, struct, sys, time
src, dst, sport, dport, size, plan = sys.argv[1:7]
sport, dport, size, plan = int(sport), int(dport), int(size), json.loads(plan)
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for n, offset, length, more, pause in plan:
    body = struct.pack("!HHHH", sport, dport, 8 + size, 0) + bytes([n & 0xFF]) * size
    chunk = body[offset:offset + length]
    flags = (0x2000 if more else 0) | (offset // 8)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(chunk), (0x4000 + n) & 0xFFFF, flags,
                     64, 17, 0, socket.inet_aton(src), socket.inet_aton(dst))
    s.sendto(ip + chunk, (dst, 0))
    if pause:
        time.sleep(pause)
"""

Step = list[Any]


def fragments(n: int, size: int, per: int = MTU_PAYLOAD) -> list[Step]:
    """The in-order fragments of datagram n (size payload bytes) as steps of a plan."""
    total = 8 + size
    steps = []
    for offset in range(0, total, per):
        length = min(per, total - offset)
        steps.append([n, offset, length, offset + length < total, 0])
    return steps


def craft(netns: str, src: str, dst: str, dport: int, size: int, plan: list[Step]) -> None:
    """Send the plan's fragments from namespace netns (see _CRAFT)."""
    in_netns(
        netns,
        sys.executable,
        "-c",
        _CRAFT,
        src,
        dst,
        "40000",
        str(dport),
        str(size),
        json.dumps(plan),
        timeout=120,
    )


# Run inside the receiving namespace: counts datagrams (and their sizes) on a UDP
# port until SIGTERM or `seconds`, then prints one JSON line.
_RECEIVE = r"""
import json, signal, socket, sys, time
addr, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE: no drops but the test's own
s.bind((addr, port))
s.settimeout(0.1)
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
print("ready", flush=True)
sizes = {}
end = time.monotonic() + seconds
while not stop and time.monotonic() < end:
    try:
        n = len(s.recv(65536))
    except socket.timeout:
        continue
    sizes[n] = sizes.get(n, 0) + 1
print(json.dumps({"received": sum(sizes.values()), "sizes": sizes}), flush=True)
"""


@contextlib.contextmanager
def receiver(netns: str, addr: str, port: int, seconds: float = 120) -> Iterator[Callable[[], Any]]:
    """A UDP receiver in netns while the block runs; yields a function that stops it
    and returns its count."""
    proc = subprocess.Popen(
        ["nsenter", f"--net={netns_path(netns)}", sys.executable, "-c", _RECEIVE, addr, str(port)]
        + [str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"

        def stop() -> Any:
            proc.terminate()
            out, _ = proc.communicate(timeout=10)
            return json.loads(out.strip().splitlines()[-1])

        yield stop
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def wait_for(predicate: Callable[[], bool], timeout: float, step: float = 0.01) -> bool:
    """Poll predicate until it holds or timeout seconds pass; whether it held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()
