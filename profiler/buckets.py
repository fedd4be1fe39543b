"""Log-linear bucket maths, the same as bucket_of() in bpf/buckets.h (tests/test_bucket_c.py).

Values below 2**SUB_BITS land in exact buckets; above, each power of two is
split into 2**SUB_BITS equal buckets, so a bucket is at most 1/64 of its
value wide and its midpoint is within 0.8% of any value in it.
"""

from __future__ import annotations

from collections.abc import Iterator

from profiler.abi import CONST

SUB_BITS = CONST["SP_SUB_BITS"]
SUB_BUCKETS = CONST["SP_SUB_BUCKETS"]
MAX_EXP = CONST["SP_MAX_EXP"]
NBUCKETS = CONST["SP_NBUCKETS"]

assert SUB_BUCKETS == 1 << SUB_BITS
assert NBUCKETS == SUB_BUCKETS + (MAX_EXP - SUB_BITS) * SUB_BUCKETS


def bucket_of(value: int) -> int:
    """Bucket index of a value (ns); values past the range go to the last bucket."""
    if value < SUB_BUCKETS:
        return max(value, 0)
    exp = value.bit_length() - 1
    if exp >= MAX_EXP:
        return NBUCKETS - 1
    sub = (value >> (exp - SUB_BITS)) & (SUB_BUCKETS - 1)
    return SUB_BUCKETS + (exp - SUB_BITS) * SUB_BUCKETS + sub


def bucket_bounds(index: int) -> tuple[int, int]:
    """Lowest value in a bucket and the bucket's width."""
    if index < SUB_BUCKETS:
        return index, 1
    octave, sub = divmod(index - SUB_BUCKETS, SUB_BUCKETS)
    shift = octave
    return (SUB_BUCKETS + sub) << shift, 1 << shift


def bucket_value(index: int) -> int:
    """The value that stands for a whole bucket: its midpoint."""
    low, width = bucket_bounds(index)
    return low + (width - 1) // 2


def nonzero(counts: list[int] | tuple[int, ...]) -> Iterator[tuple[int, int]]:
    """(bucket index, count) for each filled bucket."""
    for index, count in enumerate(counts):
        if count:
            yield index, count
