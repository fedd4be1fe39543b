"""Boots the Debian 6.1 guest once and checks what the fine-grained hook tests will rely on.

One boot (~10 s) runs every check; each test below asserts one of them. A second, bounded boot
checks that a timeout kills qemu.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import build_probe, guest_outdir
from .vm import REPO, GuestConfig, GuestResult, GuestTimeout, run_in_guest

pytestmark = pytest.mark.guest

# The guest script's exit code: proves the command's own code comes back, not vng's 255.
SENTINEL_RC = 42

GUEST_SCRIPT = r"""
say() { echo "$1=$2"; }
say uname "$(uname -r)"
[ -e /sys/kernel/btf/vmlinux ] && say btf yes || say btf no
mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing
[ -e /sys/kernel/tracing/kprobe_events ] && say kprobe_events yes || say kprobe_events no
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
mountpoint -q /sys/fs/bpf && say bpffs yes || say bpffs no

ip link set lo up
"$OUT/probe_loader" "$OUT/probe.bpf.o" 5 > "$OUT/probe.txt" 2>&1
say probe_rc $?

modprobe veth
ip netns add a && ip netns add b
ip link add va netns a type veth peer name vb netns b
ip -n a addr add 10.9.0.1/24 dev va && ip -n a link set va up
ip -n b addr add 10.9.0.2/24 dev vb && ip -n b link set vb up
ip -n a -br link show va > "$OUT/veth.txt" 2>&1
ip -n b -br addr show vb >> "$OUT/veth.txt" 2>&1
say veth_rc $?

t0=$(date +%s%N)
"$PY" -c pass
t1=$(date +%s%N)
"$PY" -c "import profiler.abi"
say import_rc $?
t2=$(date +%s%N)
say python_pass_ms $(( (t1 - t0) / 1000000 ))
say import_abi_ms $(( (t2 - t1) / 1000000 ))
exit SENTINEL_RC
""".replace("SENTINEL_RC", str(SENTINEL_RC))


@pytest.fixture(scope="module")
def smoke(guest_config: GuestConfig) -> Iterator[tuple[GuestResult, dict[str, str]]]:
    """One boot; its output folder (read by the tests) lives until the module ends."""
    with guest_outdir("smoke") as outdir:
        build_probe(outdir)
        (outdir / "smoke.sh").write_text(GUEST_SCRIPT)
        res = run_in_guest(
            f"sh {outdir}/smoke.sh",
            timeout=240,
            outdir=outdir,
            env={"OUT": str(outdir), "PY": str(REPO / ".venv" / "bin" / "python")},
            config=guest_config,
        )
        values = dict(re.findall(r"^(\w+)=(.*)$", res.stdout, flags=re.M))
        print(f"guest run: {res.seconds:.1f} s wall; {values}")
        yield res, values


def test_exit_code_comes_back(smoke: tuple[GuestResult, dict[str, str]]) -> None:
    res, _ = smoke
    assert res.returncode == SENTINEL_RC, res.stderr + res.console[-3000:]


def test_kernel_is_debian_6_1_with_btf(smoke: tuple[GuestResult, dict[str, str]]) -> None:
    _, v = smoke
    assert v.get("uname", "").startswith("6.1"), v
    assert v.get("btf") == "yes"


def test_tracefs_and_bpffs(smoke: tuple[GuestResult, dict[str, str]]) -> None:
    _, v = smoke
    assert v.get("kprobe_events") == "yes"
    assert v.get("bpffs") == "yes"


def test_kprobe_fentry_fexit_attach_and_count(smoke: tuple[GuestResult, dict[str, str]]) -> None:
    res, v = smoke
    report = (res.outdir / "probe.txt").read_text()
    assert v.get("probe_rc") == "0", report
    counts = {k: int(n) for k, n in re.findall(r"^(\w+_hits)=(\d+)$", report, flags=re.M)}
    assert set(counts) == {"kprobe_hits", "fentry_hits", "fexit_hits"}, report
    assert all(n >= 5 for n in counts.values()), report


def test_veth_pair_across_namespaces(smoke: tuple[GuestResult, dict[str, str]]) -> None:
    res, v = smoke
    report = (res.outdir / "veth.txt").read_text()
    assert v.get("veth_rc") == "0", report + res.stderr
    assert re.search(r"^va@\S+\s+UP", report, flags=re.M), report
    assert "10.9.0.2/24" in report, report


def test_project_venv_imports_in_guest(smoke: tuple[GuestResult, dict[str, str]]) -> None:
    res, v = smoke
    assert v.get("import_rc") == "0", res.stderr


def _qemu_pids_for(outdir: Path) -> list[int]:
    """Live (not zombie) qemu processes whose command line names outdir."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if b"qemu-system" in cmdline and str(outdir).encode() in cmdline and state != "Z":
            pids.append(int(entry.name))
    return pids


def test_timeout_kills_qemu(guest_config: GuestConfig) -> None:
    with guest_outdir("timeout") as outdir:
        with pytest.raises(GuestTimeout):
            run_in_guest("sleep 600", timeout=8, outdir=outdir, config=guest_config)
        assert _qemu_pids_for(outdir) == [], "qemu left running after a timeout"
        assert os.path.exists(outdir / "console.log")
