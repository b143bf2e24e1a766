"""A started sandbox serves: the runtime's start returns only once the toolbox agent
answers, and a start whose agent never answers fails with nothing left running."""

from __future__ import annotations

from pathlib import Path

import pytest

from cove.core.config import Settings
from cove.core.ports import ContainerStatus
from cove.errors import RuntimeBackendError
from cove.runner.layout import SandboxPaths
from cove.runner.oci import agent_setup, pyrt
from cove.runner.oci.agent_setup import AgentSetup
from cove.runner.oci.runtime import OciRuntime
from tests.integration.conftest import SandboxFactory, sandbox_factory
from tests.integration.runner.util import TIERS, agent_pids, tier_of

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("tier", TIERS)
def test_agent_serves_when_start_returns(runtime: OciRuntime, make_sandbox: SandboxFactory
                                         ) -> None:  # fmt: skip
    """Right after start: the agent runs (its process is there, not about to be
    forked) and the first command is answered."""
    spec = make_sandbox()
    if tier_of(runtime, spec.sandbox_id) == "crun":
        agents = agent_pids(runtime, spec.sandbox_id)
        assert agents, "no agent process when start returned"
    result = runtime.exec(spec.sandbox_id, ["echo", "served"])
    assert (result.exit_code, result.stdout) == (0, b"served\n")


def test_agent_that_never_answers_fails_the_start_and_leaves_nothing(
    it_settings: Settings, tmp_path: Path, default_rootfs: Path
) -> None:
    """The agent's runtime is broken (an empty directory where its Python should be:
    init's every attempt to start it fails). The start fails with a clear error once
    the wait is over, the container is gone, and the sandbox is merely stopped
    (its files kept; the fixture checks no mount, cgroup or process is left)."""
    broken_runtime = tmp_path / "no-python"
    broken_runtime.mkdir(mode=0o755)
    real = agent_setup.agent_setup(it_settings.data_dir)
    runtime = OciRuntime(it_settings.model_copy(update={"agent_ready_seconds": 3.0}))
    runtime._agent_setup = lambda: AgentSetup(  # type: ignore[method-assign]
        real.argv, {**real.binds, pyrt.MOUNT: broken_runtime})
    with sandbox_factory(runtime) as make:
        spec = make(start=False)
        with pytest.raises(RuntimeBackendError, match="agent"):
            runtime.start(spec)
        assert runtime.status(spec.sandbox_id) is ContainerStatus.STOPPED
        paths = SandboxPaths.of(it_settings.data_dir, spec.sandbox_id)
        assert not paths.agent_socket.exists()
        assert runtime._crun.state(spec.sandbox_id) is None
