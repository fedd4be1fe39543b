"""The BPF objects carry the programs the hook catalogue names (opened, not loaded: no root).

stackprof.bpf.o, the floors of the overhead benchmark (empty.bpf.o, clock.bpf.o) and its
timestamp-counting build of stackprof (stampcount.bpf.o) are generated from one program list
(bpf/programs.def): each must hold every program a candidate of profiler/hooks.py names, in
the same section, and all exactly the same (name, section) pairs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from profiler.hooks import BOUNDARIES, Candidate
from profiler.libbpf import BPFObject

OBJECTS = ("stackprof", "empty", "clock", "stampcount")


def object_path(name: str) -> Path:
    """Where ``make -C bpf`` builds an object (the one place this test looks for them)."""
    return Path(__file__).resolve().parent.parent / "bpf" / ".output" / f"{name}.bpf.o"


# The section kinds (before the "/") a candidate of each catalogue kind may use.
SECTION_KINDS = {
    "fentry": ("fentry", "fexit"),
    "kprobe": ("kprobe", "kretprobe"),
    "tp_btf": ("tp_btf",),
    "raw_tp": ("raw_tp",),
    "tracepoint": ("tracepoint",),
}

CANDIDATES: list[Candidate] = [c for b in BOUNDARIES for c in b.candidates]


@pytest.fixture(scope="module")
def sections() -> dict[str, dict[str, str]]:
    """Per object, its programs' sections by program name."""
    listed: dict[str, dict[str, str]] = {}
    for name in OBJECTS:
        with BPFObject(object_path(name)) as obj:
            programs = [(p.name, p.section) for p in obj.programs()]
        listed[name] = dict(programs)
        assert len(listed[name]) == len(programs), f"{name}.bpf.o repeats a program name"
    return listed


@pytest.mark.parametrize("candidate", CANDIDATES, ids=lambda c: c.label)
def test_catalogue_programs_in_every_object(
    sections: dict[str, dict[str, str]], candidate: Candidate
) -> None:
    for program in candidate.programs:
        section = sections["stackprof"].get(program)
        assert section, f"{program} is not in stackprof.bpf.o"
        for floor in OBJECTS[1:]:
            assert sections[floor].get(program) == section, f"{floor}.bpf.o: {program}"


@pytest.mark.parametrize("candidate", CANDIDATES, ids=lambda c: c.label)
def test_sections_fit_the_candidate(
    sections: dict[str, dict[str, str]], candidate: Candidate
) -> None:
    """A candidate's programs attach the way its kind says (kprobes to its functions)."""
    for index, program in enumerate(candidate.programs):
        kind, _, target = sections["stackprof"][program].partition("/")
        assert kind in SECTION_KINDS[candidate.kind], f"{program}: {kind}"
        if candidate.kind == "kprobe":
            assert target == candidate.functions[index], program
        elif candidate.kind in ("tp_btf", "raw_tp"):
            assert target == candidate.target.split(",")[index], program


def test_objects_hold_the_same_programs(sections: dict[str, dict[str, str]]) -> None:
    want = set(sections["stackprof"].items())
    for floor in OBJECTS[1:]:
        have = set(sections[floor].items())
        assert have == want, f"{floor}.bpf.o: extra {have - want}, missing {want - have}"


def test_every_program_is_in_the_catalogue(sections: dict[str, dict[str, str]]) -> None:
    """No program of the list that no candidate uses (it would never be loaded)."""
    named = {p for c in CANDIDATES for p in c.programs}
    assert set(sections["stackprof"]) - named == set()
