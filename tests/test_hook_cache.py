"""The proven hook choice is remembered per kernel and object, re-proven when the
kernel's BTF changes, and a remembered choice that no longer works is proved again."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from profiler import hookcache, loader
from profiler.hooks import BY_NAME, KINDS, LEAN_BOUNDARIES
from profiler.loader import Tracer, choose_hooks, make_config
from profiler.session import hooks_or_fail

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: loads BPF"),
]


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("STACKPROF_NO_HOOK_CACHE", raising=False)
    btf = tmp_path / "vmlinux"
    shutil.copyfile(hookcache.BTF, btf)
    monkeypatch.setattr(hookcache, "BTF", btf)
    return btf


def _no_proof(*args: object, **kwargs: object) -> loader.HookChoice:
    raise AssertionError("proved again although the cache holds this kernel's choice")


def test_second_start_takes_the_remembered_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    first = choose_hooks()
    assert not first.cached
    assert len(list(hookcache.cache_dir().glob("hooks-*.json"))) == 1
    monkeypatch.setattr(loader, "prove_hooks", _no_proof)
    second = choose_hooks()
    assert second.cached and second.labels() == first.labels()
    assert second.refused == first.refused


def test_other_kinds_or_skips_are_proved_on_their_own() -> None:
    choose_hooks()
    other = choose_hooks(skip=("dev_rx",))
    assert not other.cached and other.chosen["dev_rx"] is None
    assert len(list(hookcache.cache_dir().glob("hooks-*.json"))) == 2


def test_a_lean_choice_is_remembered_on_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """--detail lean asks for fewer hook points: proved and remembered apart from full's,
    and a point both lean and --skip leave out is the same question."""
    full = hooks_or_fail(KINDS, (), "udp", "full")
    lean = hooks_or_fail(KINDS, (), "udp", "lean")
    assert not full.cached and not lean.cached
    assert {point for point, c in lean.chosen.items() if c} == set(LEAN_BOUNDARIES)
    assert len(list(hookcache.cache_dir().glob("hooks-*.json"))) == 2
    monkeypatch.setattr(loader, "prove_hooks", _no_proof)
    again = hooks_or_fail(KINDS, ("dev_rx",), "udp", "lean")
    assert again.cached and again.labels() == lean.labels()
    assert hooks_or_fail(KINDS, (), "udp", "full").labels() == full.labels()


def test_a_changed_btf_is_proved_again(own_cache: Path) -> None:
    choose_hooks()
    with own_cache.open("ab") as btf:
        btf.write(b"\0")
    assert not choose_hooks().cached


def _remember_a_stale_choice() -> loader.HookChoice:
    """Prove the hooks, then remember a candidate that failed in place of one that
    worked (as a kernel change the key does not see would): the proven choice."""
    proven = choose_hooks(cache=False)
    point, refusals = next(
        (
            (p, r)
            for p, r in proven.refused.items()
            if p in proven.chosen and proven.chosen[p] and r
        ),
        (None, None),
    )
    if point is None:
        pytest.skip("every first candidate works on this kernel: nothing to go stale")
    failed = refusals[0].split(": ")[0].split(":", 1)
    label = f"{failed[0]}:{failed[1]}"
    assert label in {c.label for c in BY_NAME[point].candidates}
    remembered = {**proven.labels(), point: label}
    digest = hookcache.key(loader.OBJECT, proven.kinds, proven.skip)
    hookcache.store(digest, remembered, proven.refused)
    return proven


def test_a_remembered_choice_that_fails_is_proved_again() -> None:
    proven = _remember_a_stale_choice()
    with Tracer(make_config(7000, 7000), choose_hooks()) as tracer:
        assert tracer.choice.labels() == proven.labels()
    stored = json.loads(next(hookcache.cache_dir().glob("hooks-*.json")).read_text())
    assert stored["chosen"] == proven.labels()


def test_an_unchecked_remembered_choice_is_proved_by_the_tracer() -> None:
    """attach takes the remembered choice without a load of its own (check=False):
    the Tracer's load is the check, and a failing one is proved again there."""
    proven = _remember_a_stale_choice()
    unchecked = choose_hooks(proven.kinds, skip=proven.skip, check=False)
    assert unchecked.cached and unchecked.labels() != proven.labels()
    with Tracer(make_config(7000, 7000), unchecked) as tracer:
        assert tracer.choice.reproved and tracer.choice.labels() == proven.labels()
    stored = json.loads(next(hookcache.cache_dir().glob("hooks-*.json")).read_text())
    assert stored["chosen"] == proven.labels()
