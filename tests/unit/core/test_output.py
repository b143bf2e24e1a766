"""The output execute returns in one piece: its start and its end, never more than the limit."""

from __future__ import annotations

import tracemalloc

from cove.core.output import CappedOutput, marker


def test_output_within_the_limit_is_returned_whole() -> None:
    out = CappedOutput(16)
    for chunk in (b"abc", b"", b"defghij", b"klmnop"):
        out.add(chunk)
    assert out.bytes() == b"abcdefghijklmnop" and out.omitted == 0


def test_beyond_the_limit_the_start_and_the_newest_bytes_are_kept() -> None:
    out = CappedOutput(8)
    out.add(b"0123")
    out.add(b"456789")
    out.add(b"abcdefgh")  # 18 bytes in all: 0123 kept, 10 dropped, efgh kept
    assert out.bytes() == b"0123" + marker(10) + b"efgh"


def test_one_huge_chunk_is_clipped_too() -> None:
    out = CappedOutput(1024)
    out.add(b"A" * 512 + b"B" * 10_000_000 + b"C" * 512)
    assert out.bytes() == b"A" * 512 + marker(10_000_000) + b"C" * 512


def test_bytes_the_agent_left_out_are_counted() -> None:
    out = CappedOutput(8)
    out.add(b"0123")
    out.skip(1000)
    out.add(b"wxyz")
    assert out.bytes() == b"0123" + marker(1000) + b"wxyz"


def test_memory_stays_bounded_by_the_limit() -> None:
    out = CappedOutput(4096)
    for _ in range(10_000):
        out.add(b"x" * 1000)
    assert out._tail_size < 4096 + 1000 and len(out._head) == 2048  # noqa: SLF001
    assert len(out.bytes()) < 4096 + 100


def test_memory_stays_bounded_by_the_limit_in_chunks_of_two_bytes() -> None:
    """A lying agent's output in frames of two bytes each: what the server keeps is the
    limit's bytes, not an object (~40 bytes) for each frame."""
    limit = 256 * 1024
    out = CappedOutput(limit)
    tracemalloc.start()
    try:
        for _ in range(limit):
            out.add(bytes(bytearray(b"xy")))  # (a new object, as each frame's payload is)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert held < 2 * limit, held
    assert out.bytes() == b"xy" * (limit // 4) + marker(limit) + b"xy" * (limit // 4)
