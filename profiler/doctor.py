"""``stackprof doctor``'s proofs: what this kernel lets stackprof do, proved, not guessed.

Every attach kind is proved by loading (and, where it is harmless, attaching) a trivial program
of ``bpf/probe.bpf.c``; the hook per hook point is what ``choose_hooks`` picks, the same proof
``stackprof trace`` runs. Version numbers are never consulted: distributions backport and strip.
The receive tracepoints, and which of them fire for datagrams received by netif_rx and
by NAPI/GRO, come from :mod:`profiler.receive`'s proof and self-test.
The result is a :class:`~profiler.diagnosis.Diagnosis` (the checks of features and
settings are :mod:`profiler.checks`); drawing it is :mod:`profiler.views.doctor`'s
business, and nothing here imports rich.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
from collections.abc import Callable
from pathlib import Path

from profiler import checks, kallsyms, loader, receive
from profiler.diagnosis import PROBE_OBJECT_NAME, PROBES, Diagnosis, HookPoint, KindResult, Probe
from profiler.errors import one_line
from profiler.hooks import BOUNDARIES, FUNCTIONS, functions_of
from profiler.libbpf import BPFObject, tc_attach_ingress, xdp_link

PROBE_OBJECT = loader.OBJECT.parent / PROBE_OBJECT_NAME

SO_ATTACH_BPF = 50
CLONE_NEWNET = 0x40000000
LOOPBACK_IFINDEX = 1  # lo is always ifindex 1 in a new network namespace

_libc = ctypes.CDLL(None, use_errno=True)


def _attach_to_socket(obj: BPFObject, name: str) -> None:
    """Attach a socket filter to a throwaway UDP socket: proof without touching traffic."""
    fd = obj.program(name).new_fd()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_BPF, fd)
    finally:
        os.close(fd)


def _attach_xdp(prog_fd: int) -> None:
    os.close(xdp_link(prog_fd, LOOPBACK_IFINDEX))


def _attach_tc(prog_fd: int) -> None:
    tc_attach_ingress(prog_fd, LOOPBACK_IFINDEX)


def _child_netns_status(prog_fd: int, attach: Callable[[int], None]) -> int:
    """In the forked child: errno of the attach in a fresh network namespace, 0 if it worked."""
    try:
        if _libc.unshare(CLONE_NEWNET) != 0:
            return ctypes.get_errno() or errno.EPERM
        attach(prog_fd)
    except OSError as exc:
        return exc.errno or errno.EINVAL
    except BaseException:
        return errno.EINVAL
    return 0


def _attach_in_throwaway_netns(obj: BPFObject, name: str, attach: Callable[[int], None]) -> None:
    """Attach to lo of a new network namespace owned by a child process: the namespace, and
    the attachment with it, vanish when the child exits; no real interface is touched."""
    fd = obj.program(name).new_fd()
    try:
        pid = os.fork()
        if pid == 0:
            os._exit(min(_child_netns_status(fd, attach), 255))
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    code = os.waitstatus_to_exitcode(status)
    if code:
        raise OSError(code, f"attach {name} in a new netns: {os.strerror(code)}")


NETNS_ATTACH: dict[str, Callable[[int], None]] = {"tc": _attach_tc, "xdp": _attach_xdp}


def prove(probe: Probe, path: Path = PROBE_OBJECT) -> KindResult:
    """Load the probe's program alone, then attach it as its proof says; detach at once."""
    try:
        with BPFObject(path) as obj:
            obj.autoload_only({probe.program})
            obj.load()
            if probe.proof == "attach":
                obj.attach(probe.program)
            elif probe.proof == "socket":
                _attach_to_socket(obj, probe.program)
            elif probe.proof in NETNS_ATTACH:
                _attach_in_throwaway_netns(obj, probe.program, NETNS_ATTACH[probe.proof])
    except OSError as exc:
        return KindResult(probe.kind, False, probe.proof, one_line(exc))
    return KindResult(probe.kind, True, probe.proof)


def hook_points(choice: loader.HookChoice) -> list[HookPoint]:
    """Per boundary of the catalogue (whatever it holds today): the hook chosen, others refused."""
    points = []
    for boundary in BOUNDARIES:
        chosen = choice.chosen.get(boundary.name)
        symbols = {f: kallsyms.resolve(f, FUNCTIONS) for f in functions_of(boundary.candidates)}
        points.append(
            HookPoint(
                name=boundary.name,
                what=boundary.what,
                required=boundary.required,
                hook=chosen.label if chosen else None,
                kind=chosen.kind if chosen else None,
                refused=list(choice.refused.get(boundary.name, [])),
                symbols=symbols,
            )
        )
    return points


def _unproved(why: str) -> tuple[list[KindResult], loader.HookChoice]:
    """Nothing can be loaded (not root): every kind and hook point reads as refused, why."""
    attach = [KindResult(p.kind, False, p.proof, why) for p in PROBES]
    choice = loader.HookChoice()
    for boundary in BOUNDARIES:
        choice.chosen[boundary.name] = None
        choice.refused[boundary.name] = [why]
    return attach, choice


def _prove_all(probe_object: Path, object_path: Path) -> tuple[list[KindResult], loader.HookChoice]:
    loader.ensure_tracefs()
    attach = [prove(p, probe_object) for p in PROBES]
    return attach, loader.choose_hooks(path=object_path, cache=False)


def diagnose(probe_object: Path = PROBE_OBJECT, object_path: Path = loader.OBJECT) -> Diagnosis:
    """Run every proof and check; loads and attaches BPF programs for an instant each."""
    tracefs_was_mounted = checks.tracefs_mounted()
    root = os.geteuid() == 0
    if root:
        attach, choice = _prove_all(probe_object, object_path)
    else:
        attach, choice = _unproved("not proved: loading BPF needs root")
    results = {r.kind: r for r in attach}
    points = hook_points(choice)
    rx_hooks = receive.receive_hooks(choice, object_path, root)
    rx_tests = receive.self_test(root)
    found = [
        checks.root_check(root),
        *checks.hook_checks(points, choice.unobserved()),
        checks.btf_check(),
        *(checks.attach_checks(results) if root else []),
        checks.rds_check(),
        *checks.packet_checks(),
        checks.defrag_check(),
        checks.tracefs_check(tracefs_was_mounted, root),
        checks.bpffs_check(),
        checks.bpf_stats_check(),
        checks.receive_check(rx_tests),
    ]
    return Diagnosis(
        kernel=os.uname().release,
        root=root,
        attach=attach,
        hooks=points,
        unobserved=choice.unobserved(),
        missing_required=choice.missing_required(),
        checks=found,
        probe_object=probe_object.name,
        receive_hooks=rx_hooks,
        rx_selftest=rx_tests,
    )
