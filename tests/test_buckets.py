"""Bucket maths against exact values (the BPF side computes the same)."""

from __future__ import annotations

import pytest

from profiler.buckets import NBUCKETS, bucket_bounds, bucket_of, bucket_value
from profiler.run import histogram_from_buckets


@pytest.mark.parametrize(
    ("value", "index"),
    [
        (0, 0),
        (1, 1),
        (63, 63),
        (64, 64),
        (65, 65),
        (127, 127),
        (128, 128),
        (129, 128),
        (130, 129),
        (255, 191),
        (256, 192),
        (1000, 317),
        (12345, 544),
        (2**36 - 1, NBUCKETS - 1),
        (2**40, NBUCKETS - 1),
    ],
)
def test_bucket_of_exact(value: int, index: int) -> None:
    assert bucket_of(value) == index


@pytest.mark.parametrize("index", [0, 63, 64, 127, 128, 500, 1000, NBUCKETS - 1])
def test_bounds_contain_their_values(index: int) -> None:
    low, width = bucket_bounds(index)
    assert bucket_of(low) == index
    assert bucket_of(low + width - 1) == index
    if index < NBUCKETS - 1:
        assert bucket_of(low + width) == index + 1


def test_buckets_are_contiguous_and_fine() -> None:
    for index in range(1, NBUCKETS):
        low, width = bucket_bounds(index)
        prev_low, prev_width = bucket_bounds(index - 1)
        assert prev_low + prev_width == low
        assert width == 1 or width / low <= 1 / 64


@pytest.mark.parametrize("value", [70, 999, 5_900, 28_000, 3_400_000, 10**9])
def test_midpoint_error_under_one_percent(value: int) -> None:
    assert abs(bucket_value(bucket_of(value)) - value) / value < 0.01


def test_histogram_from_buckets_percentiles() -> None:
    counts = [0] * NBUCKETS
    counts[bucket_of(1_000)] = 90
    counts[bucket_of(50_000)] = 10
    hist = histogram_from_buckets(counts)
    assert hist.get_total_count() == 100
    assert abs(hist.get_value_at_percentile(50) - 1_000) / 1_000 < 0.01
    assert abs(hist.get_value_at_percentile(99) - 50_000) / 50_000 < 0.01
