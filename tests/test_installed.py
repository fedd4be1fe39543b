"""stackprof installed from a wheel into a fresh venv outside the checkout runs there.

The wheel is built (the dev extra's setuptools, no build isolation: no download)
from a copy of the checkout's pyproject.toml, profiler/ and servers/ in a
temporary folder, so the checkout gets no build/ and the wheel no leftovers of
one; the copy's profiler/assets/ gets the objects and header profiler.resources
picks now (what setup.sh would copy). The new venv has no pip and takes the
dependencies from where this interpreter has them (the project .venv) through a
.pth file of path lines (that folder's own .pth files, among them the editable
install of stackprof, are not run); the .venv's pip installs the wheel into it
(``--python``) without dependencies or index: no network, ~3 s. The commands
run from another temporary folder, PYTHONPATH unset.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from profiler import resources

REPO = Path(__file__).resolve().parent.parent
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
FIXTURE = REPO / "traces" / "fixtures" / "udp-mtu9000-cpu0.json"


def run(argv: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def checked(argv: list[str], cwd: Path) -> str:
    proc = run(argv, cwd)
    assert proc.returncode == 0, f"{' '.join(argv)}:\n{proc.stdout}{proc.stderr}"
    return proc.stdout


def dependency_dirs() -> list[str]:
    """The folders this interpreter finds pyproject's dependencies (and theirs) in."""
    names = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    todo, seen, dirs = [_name(r) for r in names], set(), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # a requirement under a marker false here
        dirs.add(str(Path(str(dist.locate_file(""))).resolve()))
        todo += [_name(r) for r in dist.requires or [] if "extra ==" not in r]
    return sorted(dirs)


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match, requirement
    return match.group(0)


class Installed:
    def __init__(self, root: Path) -> None:
        self.venv = root / "venv"
        self.cwd = root / "cwd"

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run([str(self.venv / "bin" / "stackprof"), *args], self.cwd)

    def python(self, code: str) -> str:
        return checked([str(self.venv / "bin" / "python"), "-c", code], self.cwd)


@pytest.fixture(scope="module")
def installed() -> Iterator[Installed]:
    root = Path(tempfile.mkdtemp(prefix="stackprof-installed-", dir="/tmp"))
    assert not root.is_relative_to(REPO)
    try:
        src = root / "src"
        src.mkdir()
        shutil.copy2(REPO / "pyproject.toml", src)
        skip = shutil.ignore_patterns("__pycache__", "*.pyc", "assets", "*.egg-info")
        for package in ("profiler", "servers"):
            shutil.copytree(REPO / package, src / package, ignore=skip)
        assets = src / "profiler" / resources.ASSETS
        assets.mkdir()
        for name in resources.OBJECTS:
            shutil.copy2(resources.bpf_object(name), assets)
        shutil.copy2(resources.shared_header(), assets)

        wheels = root / "wheels"
        checked(
            [*PIP, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), "."],
            src,
        )
        (wheel,) = wheels.glob("stackprof-*.whl")
        venv = root / "venv"
        checked([sys.executable, "-m", "venv", "--without-pip", str(venv)], root)
        site = Path(checked([str(venv / "bin" / "python"), "-c", PURELIB], root).strip())
        (site / "_stackprof_test_deps.pth").write_text("".join(f"{d}\n" for d in dependency_dirs()))
        checked(
            [*PIP, "--python", str(venv / "bin" / "python"), "install", "-q", "--no-deps"]
            + ["--no-index", str(wheel)],
            root,
        )
        (root / "cwd").mkdir()
        yield Installed(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


PURELIB = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
WHERE = """
import json, profiler, servers
from profiler import abi, doctor, loader, resources
from servers import netns_exec
print(json.dumps({
    "profiler": profiler.__file__, "servers": servers.__file__, "object": str(loader.OBJECT),
    "probe": str(doctor.PROBE_OBJECT), "header": str(abi.HEADER),
    "checkout": str(resources.checkout("stackprof.h")),
    "objects": [str(resources.bpf_object(n)) for n in resources.OBJECTS],
}))
"""


def test_imports_the_installed_package_and_its_assets(installed: Installed) -> None:
    where = json.loads(installed.python(WHERE))
    assert where.pop("checkout") == "None"
    objects = where.pop("objects")
    assert [Path(p).name for p in objects] == [f"{n}.bpf.o" for n in resources.OBJECTS]
    for what, path in [*where.items(), *(("object", p) for p in objects)]:
        assert Path(path).resolve().is_relative_to(installed.venv.resolve()), (what, path)
        assert not Path(path).resolve().is_relative_to(REPO), (what, path)
    assert Path(where["header"]).read_bytes() == resources.shared_header().read_bytes()


def test_report_renders_a_saved_run(installed: Installed) -> None:
    proc = installed("report", str(FIXTURE))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for stage in ("total", "send", "recv"):
        assert re.search(rf"^\W*{stage}\s+\d+\s", proc.stdout, flags=re.M), proc.stdout


def test_servers_run_as_modules(installed: Installed) -> None:
    proc = run(
        [str(installed.venv / "bin" / "python"), "-m", "servers.udp_server", "--help"],
        installed.cwd,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: BPF")
def test_doctor_loads_the_packaged_objects(installed: Installed) -> None:
    proc = installed("doctor", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    assert {"tp_btf", "raw_tp", "tracepoint"} <= set(doc["attach"]), doc["attach"]
    assert all("works" in kind for kind in doc["attach"].values())
