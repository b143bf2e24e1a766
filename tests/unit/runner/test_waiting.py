"""Waiting for a descriptor at any number (a busy server's go past select's 1023)."""

from __future__ import annotations

import os
import resource
import socket
from collections.abc import Iterator

import pytest

from cove.runner.host.waiting import readable


@pytest.fixture
def high_fd() -> Iterator[int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1600:
        pytest.skip("this process may not hold descriptor 1500")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1600), hard))
    try:
        yield 1500
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_descriptor_above_select_s_limit_is_waited_for(high_fd: int) -> None:
    r, w = os.pipe()
    try:
        os.dup2(r, high_fd)
        assert not readable(high_fd, 0)
        os.write(w, b"x")
        assert readable(high_fd, 1)
    finally:
        for fd in (r, w, high_fd):
            os.close(fd)


def test_a_socket_and_a_hang_up() -> None:
    ours, theirs = socket.socketpair()
    with ours:
        assert not readable(ours, 0.01)
        theirs.close()
        assert readable(ours, 1)  # (the peer hung up: a read returns at once)
