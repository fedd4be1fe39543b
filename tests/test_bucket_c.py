"""The C bucket maths the BPF programs run (bpf/buckets.h) agrees with profiler/buckets.py.

tests/bucket_check.c wraps bucket_of() for user space; it is compiled here with the
system C compiler and fed a dense sweep of values.
"""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest

from profiler.buckets import MAX_EXP, NBUCKETS, bucket_bounds, bucket_of

HERE = Path(__file__).resolve().parent
BPF = HERE.parent / "bpf"
U64_MAX = 2**64 - 1


@pytest.fixture(scope="module")
def bucket_check(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/bucket_check.c built against bpf/buckets.h, warnings as errors."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler (setup.sh installs gcc)")
    exe = tmp_path_factory.mktemp("bucket_check") / "bucket_check"
    proc = subprocess.run(
        [cc, "-Wall", "-Wextra", "-Werror", "-O2", "-I", str(BPF)]
        + [str(HERE / "bucket_check.c"), "-o", str(exe)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return exe


def c_buckets(exe: Path, values: list[int]) -> list[tuple[int, bool]]:
    """(bucket, out of range) per value, as the C code computes them."""
    proc = subprocess.run(
        [str(exe)],
        input="".join(f"{v}\n" for v in values),
        capture_output=True,
        text=True,
        check=True,
    )
    rows = [line.split() for line in proc.stdout.splitlines()]
    return [(int(bucket), flag == "1") for bucket, flag in rows]


def sweep() -> list[int]:
    """0 to 4,096, each power of two and its neighbours, every bucket's edges,
    random u64s spread over every octave and over the whole range, the maximum."""
    values = set(range(4097))
    for exp in range(64):
        values.update({2**exp - 1, 2**exp, 2**exp + 1})
    for index in range(NBUCKETS):
        low, width = bucket_bounds(index)
        values.update({low, low + width - 1, low + width})
    rng = random.Random(20261202)
    for _ in range(4000):
        values.add(rng.getrandbits(rng.randint(1, 64)))
        values.add(rng.getrandbits(64))
    values.add(U64_MAX)
    return sorted(v for v in values if 0 <= v <= U64_MAX)


@pytest.fixture(scope="module")
def swept(bucket_check: Path) -> list[tuple[int, int, bool]]:
    """(value, C bucket, C out of range) for every value of the sweep."""
    values = sweep()
    got = c_buckets(bucket_check, values)
    assert len(got) == len(values)
    return [(v, bucket, flag) for v, (bucket, flag) in zip(values, got, strict=True)]


def test_c_bucket_of_matches_python(swept: list[tuple[int, int, bool]]) -> None:
    wrong = [(v, bucket, bucket_of(v)) for v, bucket, _ in swept if bucket != bucket_of(v)]
    assert not wrong, f"{len(wrong)} values differ (value, C, Python): {wrong[:10]}"


def test_c_out_of_range_exactly_past_the_last_octave(swept: list[tuple[int, int, bool]]) -> None:
    """The BPF side counts out_of_range for exactly the values at or past 2**MAX_EXP."""
    wrong = [v for v, _, flag in swept if flag != (v >= 2**MAX_EXP)]
    assert not wrong, wrong[:10]
