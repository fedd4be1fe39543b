"""The workload's datagram format: pure functions, no root needed."""

from __future__ import annotations

import pytest

from servers.payload import (
    HEADER_SIZE,
    MAX_DATAGRAM,
    Verdict,
    build_request,
    build_response,
    check_size,
    parse_header,
    verify_response,
)


@pytest.mark.parametrize("size", [HEADER_SIZE, 512, 8192, MAX_DATAGRAM])
def test_request_has_exact_size_and_header(size: int) -> None:
    request = build_request(7, 42, size)
    assert len(request) == size
    assert parse_header(request) == (7, 42)


@pytest.mark.parametrize("size", [HEADER_SIZE, 100, 8192, MAX_DATAGRAM])
def test_response_round_trip(size: int) -> None:
    response = build_response(build_request(3, 1000, 512), size)
    assert response is not None and len(response) == size
    assert verify_response(response, 3, 1000, size) is Verdict.OK
    assert verify_response(memoryview(response), 3, 1000, size) is Verdict.OK


def test_content_depends_on_sequence() -> None:
    assert build_response(build_request(1, 1, 64), 8192) != build_response(
        build_request(1, 2, 64), 8192
    )


def test_stale_response_is_recognised() -> None:
    old = build_response(build_request(1, 5, 512), 8192)
    assert old is not None
    assert verify_response(old, 1, 6, 8192) is Verdict.STALE


@pytest.mark.parametrize(
    "mutate",
    [
        lambda r: r[:-1],  # truncated
        lambda r: r + b"x",  # too long
        lambda r: r[:100] + bytes([r[100] ^ 1]) + r[101:],  # corrupted body
        lambda r: b"\0" + r[1:],  # bad magic
    ],
)
def test_damaged_response_is_bad(mutate) -> None:  # type: ignore[no-untyped-def]
    response = build_response(build_request(1, 9, 512), 8192)
    assert response is not None
    assert verify_response(mutate(response), 1, 9, 8192) is Verdict.BAD


def test_other_client_or_future_seq_is_bad() -> None:
    response = build_response(build_request(2, 9, 512), 8192)
    assert response is not None
    assert verify_response(response, 1, 9, 8192) is Verdict.BAD
    assert verify_response(response, 2, 8, 8192) is Verdict.BAD


def test_malformed_request_gets_no_response() -> None:
    assert build_response(b"short", 8192) is None
    assert build_response(b"\0" * 64, 8192) is None


@pytest.mark.parametrize("size", [0, HEADER_SIZE - 1, MAX_DATAGRAM + 1])
def test_check_size_rejects(size: int) -> None:
    with pytest.raises(ValueError, match="request-size"):
        check_size("request-size", size)
