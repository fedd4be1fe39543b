"""Run a shell command inside Debian bookworm's stock 6.1 kernel, booted under qemu by virtme-ng.

The host kernel here has neither kprobes nor BPF trampolines; the guest kernel has both. The
guest shares the host's root filesystem read-only over 9p (with a throw-away tmpfs on top), so
it sees this repo, its .venv, the host's python, bpftool and anything built on the host. Only
``outdir`` (a ``--rwdir``) is writable through to the host: results must be written there.

Prepare the kernel, qemu and virtme-ng once with ``tests/guest/fetch_kernel.sh`` (as root;
``ensure_guest()`` runs it). Then::

    from tests.guest.vm import run_in_guest
    res = run_in_guest("uname -r")
    assert res.returncode == 0 and res.stdout.startswith("6.1")

Costs, measured under software emulation (qemu TCG, 2 vCPUs): ~6-9 s per call of which ~4-5 s
is the boot; python in the guest is ~10x slower than on the host. Keep in-guest work small and
batch checks into one call.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
FETCH_SCRIPT = HERE / "fetch_kernel.sh"
DEFAULT_CACHE = Path("/opt/stackprof-guest")
# virtme-ng mounts tmpfs over these in the guest: an outdir or cache there would be invisible.
_HIDDEN_IN_GUEST = ("/var/cache", "/var/tmp", "/var/log", "/var/lib", "/run", "/dev", "/proc")


class GuestError(RuntimeError):
    """The guest could not be booted, or it died before the command finished."""


class GuestUnavailable(GuestError):
    """The kernel, qemu or virtme-ng are not installed: run tests/guest/fetch_kernel.sh."""


class GuestTimeout(GuestError):
    """The guest ran past its timeout; qemu was killed."""


@dataclass(frozen=True)
class GuestConfig:
    """What fetch_kernel.sh prepared, read from CACHE_DIR/guest.env."""

    kver: str
    vmlinux: Path
    vng: Path
    qemu: Path
    busybox: Path

    @property
    def bindir(self) -> Path:
        return self.vng.parent


@dataclass
class GuestResult:
    returncode: int  # the command's own exit code (vng itself always exits 255 here)
    stdout: str  # the command's stdout, captured to outdir/stdout
    stderr: str  # the command's stderr, captured to outdir/stderr
    console: str  # everything vng printed: boot log, init messages
    outdir: Path  # the --rwdir: files the command wrote there are here
    seconds: float  # wall time of the whole vng run, boot included


def cache_dir() -> Path:
    return Path(os.environ.get("STACKPROF_GUEST_CACHE", DEFAULT_CACHE))


def load_config(cache: Path | None = None) -> GuestConfig:
    """Read CACHE_DIR/guest.env; raise GuestUnavailable naming what is missing."""
    cache = cache or cache_dir()
    env_file = cache / "guest.env"
    hint = f"run (as root): bash {FETCH_SCRIPT} {cache}"
    if not env_file.is_file():
        raise GuestUnavailable(f"no guest kernel prepared in {cache} ({env_file} missing); {hint}")
    values: dict[str, str] = {}
    for line in env_file.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    try:
        config = GuestConfig(
            kver=values["KVER"],
            vmlinux=Path(values["VMLINUX"]),
            vng=Path(values["VNG"]),
            qemu=Path(values["QEMU"]),
            busybox=Path(values["BUSYBOX"]),
        )
    except KeyError as exc:
        raise GuestUnavailable(f"{env_file} lacks {exc}; {hint}") from None
    for what, path in (
        ("kernel", config.vmlinux),
        ("virtme-ng", config.vng),
        ("qemu", config.qemu),
        ("busybox", config.busybox),
    ):
        if not os.access(path, os.R_OK):
            raise GuestUnavailable(f"{what} missing: {path} does not exist; {hint}")
    return config


def ensure_guest(cache: Path | None = None, timeout: float = 1200) -> GuestConfig:
    """Run fetch_kernel.sh (idempotent: ~1 s when all is cached) and load its config.

    Raises GuestUnavailable with the script's output when it fails.
    """
    cache = cache or cache_dir()
    proc = subprocess.run(
        ["bash", str(FETCH_SCRIPT), str(cache)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise GuestUnavailable(
            f"{FETCH_SCRIPT} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
        )
    return load_config(cache)


def _check_visible(path: Path, what: str) -> None:
    if any(path == Path(p) or Path(p) in path.parents for p in _HIDDEN_IN_GUEST):
        raise ValueError(f"{what} {path} is hidden by a tmpfs inside the guest; use /tmp or /work")


def _live_members(pgid: int) -> list[int]:
    """Pids of the processes of group ``pgid`` that are not zombies."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after its ')'.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def _kill_group(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """Kill vng and everything it started (qemu included): they share its process group.

    Waits until no live process is left in the group, so no qemu outlives the call.
    """
    deadline = time.monotonic() + grace
    while True:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.2)
        if proc.poll() is not None and not _live_members(proc.pid):
            return
        if time.monotonic() > deadline:
            raise GuestError(
                f"processes of group {proc.pid} survive SIGKILL: {_live_members(proc.pid)}"
            )
        time.sleep(0.1)


def run_in_guest(
    command: str,
    timeout: float = 300,
    cpus: int = 2,
    memory: str = "2G",
    *,
    outdir: Path | None = None,
    cwd: Path | None = REPO,
    env: Mapping[str, str] | None = None,
    config: GuestConfig | None = None,
    extra_args: Sequence[str] = (),
) -> GuestResult:
    """Boot the guest kernel, run ``command`` with /bin/sh as root, and power off.

    The command runs in ``cwd`` (the repo by default) with ``env`` exported; its stdout and
    stderr go to files in ``outdir`` (a fresh folder under /tmp by default), which the guest
    can write. Returns once the guest has powered off; kills qemu and raises GuestTimeout after
    ``timeout`` seconds, GuestError if the guest died before the command finished, and
    GuestUnavailable if the kernel, qemu or virtme-ng are missing (never skips).
    """
    config = config or load_config()
    if outdir is None:
        outdir = Path(tempfile.mkdtemp(prefix="stackprof-guest-", dir="/tmp"))
    outdir = outdir.resolve()
    _check_visible(outdir, "outdir")
    if cwd is not None:
        _check_visible(Path(cwd).resolve(), "cwd")
    outdir.mkdir(parents=True, exist_ok=True)
    rc_file, out_file, err_file = outdir / "rc", outdir / "stdout", outdir / "stderr"
    for stale in (rc_file, out_file, err_file):
        stale.unlink(missing_ok=True)

    prologue = [f"cd {shlex.quote(str(cwd))}"] if cwd is not None else []
    prologue += [f"export {k}={shlex.quote(v)}" for k, v in (env or {}).items()]
    # A subshell, so an `exit` in the command still reaches the rc line.
    script = "; ".join(
        [
            *prologue,
            f"( {command}\n) > {shlex.quote(str(out_file))} 2> {shlex.quote(str(err_file))}",
            f"echo $? > {shlex.quote(str(rc_file))}",
        ]
    )
    argv = [
        str(config.vng),
        "-v",  # without udev, the command's console is the serial line: -v shows it
        "--force-9p",  # skips a failed 3 s attempt at Debian's old virtiofsd
        "--disable-kvm",  # mandatory: this machine's /dev/kvm cannot run a stock kernel
        "--cpus",
        str(cpus),
        "--memory",
        memory,
        "--busybox",
        str(config.busybox),
        "--rwdir",
        str(outdir),
        *extra_args,
        "-r",
        str(config.vmlinux),
        "-e",
        script,
    ]
    proc_env = dict(os.environ)
    # vng calls virtme-run, and virtme-run qemu, through PATH.
    proc_env["PATH"] = f"{config.bindir}:{config.qemu.parent}:{proc_env.get('PATH', '')}"
    if shutil.which("qemu-system-x86_64", path=proc_env["PATH"]) is None:
        raise GuestUnavailable(f"qemu-system-x86_64 not on PATH; run bash {FETCH_SCRIPT}")

    console_file = outdir / "console.log"
    started = time.monotonic()
    # Output to a file, not a pipe: nothing can block on a full pipe or a pipe held by qemu.
    with console_file.open("wb") as console_out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=console_out,
            stderr=subprocess.STDOUT,
            env=proc_env,
            start_new_session=True,  # its own process group, so qemu dies with it
        )
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            console = console_file.read_text(errors="replace")
            raise GuestTimeout(
                f"guest still running after {timeout:.0f} s; qemu killed. "
                f"Console tail:\n{console[-3000:]}"
            ) from None
        finally:
            # Normal exit, an exception or ^C: leave no qemu behind.
            _kill_group(proc)
    seconds = time.monotonic() - started
    console = console_file.read_text(errors="replace")
    if not rc_file.is_file():
        raise GuestError(
            f"the guest wrote no exit code (vng exit {proc.returncode}, {seconds:.1f} s); "
            f"console tail:\n{console[-3000:]}"
        )
    try:
        returncode = int(rc_file.read_text().strip())
    except ValueError:
        raise GuestError(f"unreadable exit code in {rc_file}: {rc_file.read_text()!r}") from None
    return GuestResult(
        returncode=returncode,
        stdout=out_file.read_text(errors="replace") if out_file.is_file() else "",
        stderr=err_file.read_text(errors="replace") if err_file.is_file() else "",
        console=console,
        outdir=outdir,
        seconds=seconds,
    )
