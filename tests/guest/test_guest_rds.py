"""The rds transport in Debian's stock 6.1 kernel, which ships RDS and RDS-TCP as modules.

The host kernel has no RDS, so the RDS reference server and clients only ever run here. One
boot loads rds_tcp, runs the workload at MTU 1500 and 9000 with 1024- and 8192-byte responses
(clients verify every response), then `stackprof trace --transport rds` through the CLI.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from profiler.hooks import UNTRACED

from .conftest import make_bpf_object
from .rds_matrix import CLIENTS
from .vm import REPO, GuestConfig, run_in_guest

pytestmark = pytest.mark.guest

GUEST_SCRIPT = r"""
modprobe veth || exit 3
modprobe rds_tcp || exit 4
"$PY" -m tests.guest.rds_matrix "$OUT/matrix.json" > "$OUT/matrix.log" 2>&1
echo $? > "$OUT/matrix.rc"
"$SP" trace --transport rds --mtu 1500 --duration 2 --clients 2 --no-live \
  --json "$OUT/trace.json" --out "$OUT/trace.run.json" > "$OUT/trace.stdout" 2> "$OUT/trace.stderr"
echo $? > "$OUT/trace.rc"
"""


@pytest.fixture(scope="module")
def guest_rds(guest_config: GuestConfig) -> Iterator[Path]:
    make_bpf_object("stackprof")
    outdir = Path(tempfile.mkdtemp(prefix="stackprof-guest-rds-", dir="/tmp"))
    try:
        (outdir / "rds.sh").write_text(GUEST_SCRIPT)
        res = run_in_guest(
            f"sh {outdir}/rds.sh",
            timeout=420,
            outdir=outdir,
            env={
                "OUT": str(outdir),
                "PY": str(REPO / ".venv" / "bin" / "python"),
                "SP": str(REPO / ".venv" / "bin" / "stackprof"),
            },
            config=guest_config,
        )
        print(f"guest rds: rc {res.returncode}, {res.seconds:.1f} s wall")
        if res.returncode != 0:
            pytest.fail(f"guest script rc {res.returncode}:\n{res.stderr}\n{res.console[-3000:]}")
        yield outdir
    finally:
        shutil.rmtree(outdir, ignore_errors=True)


def _read(outdir: Path, name: str) -> str:
    path = outdir / name
    return path.read_text(errors="replace") if path.is_file() else ""


def test_rds_serves_every_mtu_and_response_size(guest_rds: Path) -> None:
    assert _read(guest_rds, "matrix.rc").strip() == "0", _read(guest_rds, "matrix.log")[-3000:]
    rows: list[dict[str, Any]] = json.loads(_read(guest_rds, "matrix.json"))
    assert {(r["mtu"], r["response_size"]) for r in rows} == {
        (1500, 1024), (1500, 8192), (9000, 1024), (9000, 8192),
    }  # fmt: skip
    for row in rows:
        assert row["received"] > 10 and row["bad"] == 0, row
        # At most one in flight per client at the end; under emulation the first message's
        # RDS-TCP connection set-up can outlast the 1 s request timeout, once per client.
        assert row["timeouts"] <= CLIENTS, row
        assert row["sent"] - row["received"] <= CLIENTS + row["timeouts"], row
        assert row["server"]["responses"] >= row["received"], row
        assert row["server"]["bad_requests"] == 0, row


def test_trace_rds_runs_and_says_it_cannot_follow_the_messages(guest_rds: Path) -> None:
    assert _read(guest_rds, "trace.rc").strip() == "0", _read(guest_rds, "trace.stderr")[-3000:]
    doc = json.loads(_read(guest_rds, "trace.json"))
    meta = doc["meta"]
    assert meta["transport"] == "rds"
    assert meta["client"]["received"] > 10 and meta["client"]["bad"] == 0
    assert doc["client_rtt"]["count"] == meta["client"]["received"]
    assert meta["server"]["cpu_s"] > 0
    assert meta["untraced"] == UNTRACED["rds"]
    assert set(meta["unobserved"]) == set(meta["stages"])
    assert "untraced:" in _read(guest_rds, "trace.stdout")
