"""Reaching a sandbox's agent: its socket, and nothing a sandbox left in its place."""

from __future__ import annotations

from pathlib import Path

import pytest

from cove.errors import Unavailable
from cove.runner.oci import agent_setup


def test_the_agent_is_reached_at_its_socket_even_on_a_long_path(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 100) / "agent.sock"  # (past what a socket address holds)
    deep.parent.mkdir()
    with agent_setup.listen(deep) as server:
        agent_setup.connect(deep).close()
        server.accept()[0].close()


def test_a_symlink_in_the_agents_place_is_not_followed(tmp_path: Path) -> None:
    """On the gVisor tier the agent binds its socket in ``chan/``, a host directory of
    the agent's uid, which a process of the sandbox may write: a symlink left there
    (to another sandbox's agent, say) leads the server nowhere."""
    chan = tmp_path / "chan"
    chan.mkdir()
    with agent_setup.listen(tmp_path / "victim.sock") as victim:
        (chan / "agent.sock").symlink_to(tmp_path / "victim.sock")
        with pytest.raises(Unavailable):
            agent_setup.connect(chan / "agent.sock").close()
        victim.setblocking(False)
        with pytest.raises(BlockingIOError):
            victim.accept()  # nothing reached it
    (chan / "agent.sock").unlink()
    (chan / "agent.sock").write_text("not a socket")
    with pytest.raises(Unavailable):
        agent_setup.connect(chan / "agent.sock")


def test_nothing_at_the_agents_place_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(Unavailable):
        agent_setup.connect(tmp_path / "agent.sock")
