"""One-sided datagrams in Debian's stock 6.1 kernel: `trace --scope server` on fentry/fexit
and `trace --scope client` on kprobes (the host kernel has neither).

On 6.1 the socket enqueue and receive return come from fentry `sock_def_readable` and fexit
`udp_recvmsg` (or their kprobes): the receive-only requests, the send-only responses and the
residence paths are proved on those hooks here. One boot runs both traces.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import make_bpf_object
from .vm import REPO, GuestConfig, GuestResult, run_in_guest

pytestmark = pytest.mark.guest

KPROBES = "kprobe,tp_btf,raw_tp,tracepoint"
SCRIPT = r"""
modprobe veth || exit 3
common="--mtu 1500 --response-size 8192 --duration 3 --clients 2 --no-live"
"$SP" trace $common --scope server --json "$OUT/server.json" --out "$OUT/server.run.json" \
  > "$OUT/server.stdout" 2> "$OUT/server.stderr"; echo $? > "$OUT/server.rc"
"$SP" trace $common --scope client --hooks KPROBES --json "$OUT/client.json" \
  --out "$OUT/client.run.json" > "$OUT/client.stdout" 2> "$OUT/client.stderr"
echo $? > "$OUT/client.rc"
"""


def _read(outdir: Path, name: str) -> dict[str, Any]:
    rc = (outdir / f"{name}.rc").read_text().strip() if (outdir / f"{name}.rc").is_file() else "?"
    doc = outdir / f"{name}.json"
    err = (outdir / f"{name}.stderr").read_text(errors="replace")[-3000:]
    assert rc == "0" and doc.is_file(), f"{name}: rc {rc}\n{err}"
    return dict(json.loads(doc.read_text()))


@pytest.fixture(scope="module")
def runs(guest_config: GuestConfig) -> Iterator[dict[str, dict[str, Any]]]:
    make_bpf_object("stackprof")
    outdir = Path(tempfile.mkdtemp(prefix="stackprof-guest-scope-", dir="/tmp"))
    try:
        (outdir / "scope.sh").write_text(SCRIPT.replace("KPROBES", KPROBES))
        res: GuestResult = run_in_guest(
            f"sh {outdir}/scope.sh",
            timeout=400,
            outdir=outdir,
            env={"OUT": str(outdir), "SP": str(REPO / ".venv" / "bin" / "stackprof")},
            config=guest_config,
        )
        if res.returncode != 0:
            pytest.fail(f"guest script rc {res.returncode}:\n{res.stderr}\n{res.console[-3000:]}")
        yield {name: _read(outdir, name) for name in ("server", "client")}
    finally:
        shutil.rmtree(outdir, ignore_errors=True)


def count(doc: dict[str, Any], path: str, stage: str) -> int:
    return next(int(s["count"]) for s in doc["stages"] if (s["path"], s["stage"]) == (path, stage))


def p50(doc: dict[str, Any], path: str, stage: str) -> float:
    return next(
        float(s["p50_us"]) for s in doc["stages"] if (s["path"], s["stage"]) == (path, stage)
    )


def test_server_scope_on_fentry(runs: dict[str, dict[str, Any]]) -> None:
    """Requests receive-only, responses send-only with their fragment train, one server
    sample per request answered, on fentry/fexit socket hooks."""
    doc = runs["server"]
    assert doc["meta"]["kernel"].startswith("6.1"), doc["meta"]["kernel"]
    assert doc["meta"]["hooks"]["sk_enqueue"].startswith("fentry"), doc["meta"]["hooks"]
    request, response = doc["datagrams"]["request"], doc["datagrams"]["response"]
    assert request["receive_only"] == request["traced"] > 0, request
    assert response["send_only"] >= 0.99 * response["sent"] > 0, response
    assert count(doc, "response", "tx_frags") == response["send_only"]
    assert response["fragments_per_datagram"] == 6, response
    assert count(doc, "server", "total") >= 0.9 * request["traced"]
    for stage in ("rx_stack", "sock_wait", "app", "tx_stack"):
        assert count(doc, "server", stage) == count(doc, "server", "total"), stage


def test_client_scope_on_kprobes(runs: dict[str, dict[str, Any]]) -> None:
    """Requests send-only, responses receive-only, and the client path's time away is
    its largest part, on kprobe socket hooks."""
    doc = runs["client"]
    assert doc["meta"]["hooks"]["recv_return"].startswith("kprobe"), doc["meta"]["hooks"]
    request, response = doc["datagrams"]["request"], doc["datagrams"]["response"]
    assert request["send_only"] > 0 and response["receive_only"] > 0, (request, response)
    total = count(doc, "client", "total")
    assert total >= 0.9 * response["receive_only"], (total, response)
    parts = {s: p50(doc, "client", s) for s in ("tx_stack", "away", "rx_stack", "sock_wait")}
    assert max(parts, key=lambda s: parts[s]) == "away", parts
