"""`stackprof doctor --json` in Debian's stock 6.1 kernel, which has kprobes and fentry.

One boot runs the doctor once (Python is ~13x slower in the guest) and writes its JSON to the
rwdir; each test asserts one thing about it. The doctor in the guest uses the host's build of
bpf/.output (probe.bpf.o and stackprof.bpf.o, CO-RE: relocated against the guest's BTF).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from profiler.hooks import BOUNDARIES

from .conftest import guest_outdir, make_bpf_object
from .vm import REPO, GuestConfig, GuestResult, run_in_guest

pytestmark = pytest.mark.guest

FUNCTION_KINDS = ("fentry", "fexit", "kprobe", "kretprobe")


@pytest.fixture(scope="module")
def guest_doctor(guest_config: GuestConfig) -> tuple[GuestResult, dict[str, Any]]:
    make_bpf_object("probe")
    stackprof = REPO / ".venv" / "bin" / "stackprof"
    with guest_outdir("doctor") as outdir:
        res = run_in_guest(
            f"{stackprof} doctor --json > {outdir}/doctor.json",
            timeout=400,
            outdir=outdir,
            config=guest_config,
        )
        report = outdir / "doctor.json"
        text = report.read_text() if report.is_file() else ""
    print(f"guest doctor: rc {res.returncode}, {res.seconds:.1f} s wall")
    if not text.strip():
        pytest.fail(f"no doctor JSON (rc {res.returncode}):\n{res.stderr}\n{res.console[-3000:]}")
    return res, json.loads(text)


def test_doctor_exit_code_in_guest(guest_doctor: tuple[GuestResult, dict[str, Any]]) -> None:
    """Exit 0 exactly when every required hook point has a hook in this kernel.

    Debian's 6.1 lacks some tracepoints the tracer's required points rely on (e.g.
    sock:sk_data_ready, added later); whether it can run is the catalogue's business, and
    the doctor must say so either way.
    """
    res, doc = guest_doctor
    assert doc["kernel"].startswith("6.1"), doc["kernel"]
    unhooked = [b.name for b in BOUNDARIES if b.required and doc["hooks"][b.name]["hook"] is None]
    assert doc["missing_required"] == unhooked
    assert doc["core_trace_ok"] is (not unhooked)
    assert res.returncode == (0 if not unhooked else 1), res.stderr


@pytest.mark.parametrize("kind", FUNCTION_KINDS)
def test_function_kinds_attach_in_guest(
    guest_doctor: tuple[GuestResult, dict[str, Any]], kind: str
) -> None:
    _, doc = guest_doctor
    assert doc["attach"][kind]["works"] is True, doc["attach"][kind]
    assert doc["attach"][kind]["proof"] == "attach"


def test_kprobes_and_fentry_not_missing_in_guest(
    guest_doctor: tuple[GuestResult, dict[str, Any]],
) -> None:
    _, doc = guest_doctor
    assert doc["checks"]["kprobes"]["status"] == "ok", doc["checks"]["kprobes"]
    assert doc["checks"]["fentry/fexit"]["status"] == "ok", doc["checks"]["fentry/fexit"]


def test_fine_boundaries_use_fentry_in_guest(
    guest_doctor: tuple[GuestResult, dict[str, Any]],
) -> None:
    """Every hook point the catalogue offers an fentry for (today) gets fentry in the guest."""
    _, doc = guest_doctor
    fine = [b.name for b in BOUNDARIES if b.candidates and b.candidates[0].kind == "fentry"]
    wrong = {
        n: doc["hooks"].get(n) for n in fine if (doc["hooks"].get(n) or {}).get("kind") != "fentry"
    }
    assert not wrong, wrong


def test_every_boundary_reported_in_guest(
    guest_doctor: tuple[GuestResult, dict[str, Any]],
) -> None:
    _, doc = guest_doctor
    assert list(doc["hooks"]) == [b.name for b in BOUNDARIES]
