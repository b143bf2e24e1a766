"""Building a sandbox's snapshot from a Dockerfile (``buildInfo``).

A temporary build sandbox is started from the base snapshot; each ``RUN`` is
executed in it as root (with the ``ENV`` and ``WORKDIR`` so far) and its output
goes, line by line, to the sandbox's :class:`BuildLog`. The result is captured
as a snapshot of the organization named by the Dockerfile's hash, so building
the same Dockerfile again reuses it. The build sandbox is always removed; a
failed build leaves no snapshot.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import uuid
from collections import deque
from contextlib import aclosing

from cove.core.agent_types import Exited, Output
from cove.core.buildlog import BuildLog
from cove.core.config import Settings
from cove.core.dockerfile import BuildPlan, Step
from cove.core.ops import SandboxOps
from cove.core.ports import ContainerSpec, Resources, Runner
from cove.core.sandbox import Sandbox, SandboxState
from cove.core.snapshots import SnapshotService
from cove.core.toolbox import agent_client
from cove.errors import CoveError, NotFound

S = SandboxState
log = logging.getLogger(__name__)
RUN_TIMEOUT = 1800.0
TAIL_LINES = 20
MAX_LINE = 64 * 1024  # characters; a longer line is logged in pieces


class BuildFailed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def snapshot_name(plan: BuildPlan) -> str:
    return f"dockerfile-{plan.digest[:16]}"


class ImageBuilder:
    """Turns a :class:`BuildPlan` into a snapshot ref, one build per Dockerfile at a time."""

    def __init__(self, *, settings: Settings, runner: Runner, snapshots: SnapshotService) -> None:
        self.settings = settings
        self.runner = runner
        self.snapshots = snapshots
        self._locks: dict[str, asyncio.Lock] = {}

    def cached(self, organization_id: str, plan: BuildPlan) -> str | None:
        try:
            return self.snapshots.ref_for(organization_id, snapshot_name(plan))
        except NotFound:
            return None

    async def build(
        self, organization_id: str, plan: BuildPlan, base_ref: str, out: BuildLog
    ) -> str:
        """The ref of the plan's snapshot, built now unless it exists already.

        Raises:
            BuildFailed: a step failed (the reason names it and ends with its output).
        """
        name = snapshot_name(plan)
        lock = self._locks.setdefault(f"{organization_id}/{name}", asyncio.Lock())
        async with lock:
            ref = self.cached(organization_id, plan)
            if ref is not None:
                await out.write(f"Using cached snapshot {name} (no rebuild)")
                return ref
            build_id = f"build-{uuid.uuid4()}"
            await out.write(f"Building snapshot {name} from {plan.base}")
            try:
                await self._run_steps(build_id, plan, base_ref, out)
                try:
                    snap = await self.snapshots.create_from_build(
                        organization_id, name, build_id
                    )
                except CoveError as exc:
                    raise BuildFailed(f"capturing the snapshot failed: {exc.message}") from exc
            finally:
                await self._remove(build_id)
            await out.write(f"Snapshot {name} built")
            return snap.id

    async def _run_steps(
        self, build_id: str, plan: BuildPlan, base_ref: str, out: BuildLog
    ) -> None:
        s = self.settings
        spec = ContainerSpec(
            sandbox_id=build_id, hostname="build", snapshot=base_ref, user="root",
            resources=Resources(s.default_cpu, s.default_memory, s.default_disk),
        )  # fmt: skip
        try:
            await self.runner.create(spec)
            await self.runner.start(spec)
        except CoveError as exc:
            raise BuildFailed(f"the build sandbox could not start: {exc.message}") from exc
        env: dict[str, str] = {}
        cwd: str | None = None
        total = len(plan.steps)
        for number, step in enumerate(plan.steps, 1):
            await out.write(f"Step {number}/{total} : {step.text}")
            env.update(step.env)
            if step.kind == "WORKDIR":
                await self._exec(build_id, step, number, total, ["mkdir", "-p", step.path],
                                 env, None, out)  # fmt: skip
                cwd = step.path
            elif step.kind == "RUN":
                await self._exec(build_id, step, number, total, _merged(step.argv), env, cwd, out)

    async def _exec(
        self, build_id: str, step: Step, number: int, total: int, argv: list[str],
        env: dict[str, str], cwd: str | None, out: BuildLog,
    ) -> None:  # fmt: skip
        where = f"step {number}/{total} '{step.text}'"
        lines: deque[str] = deque(maxlen=TAIL_LINES)
        try:
            code = await self._stream(build_id, argv, env, cwd, out, lines)
        except CoveError as exc:
            raise BuildFailed(f"build failed at {where}: {exc}") from exc
        if code != 0:
            tail = "\n".join(lines)
            raise BuildFailed(f"build failed at {where}: exit code {code}\n{tail}".rstrip())

    async def _stream(
        self, build_id: str, argv: list[str], env: dict[str, str], cwd: str | None,
        out: BuildLog, lines: deque[str],
    ) -> int:  # fmt: skip
        """Run ``argv`` as root through the build sandbox's agent; each output line goes
        to the log as soon as it is printed (a line longer than MAX_LINE in pieces).
        Returns the exit code."""
        agent = agent_client(self.runner, build_id, "root", {})
        pending, code = "", -1
        async with aclosing(agent.exec_stream(shlex.join(argv), cwd, env, RUN_TIMEOUT)) as events:
            async for event in events:
                if isinstance(event, Exited):
                    code = event.exit_code
                    continue
                if not isinstance(event, Output) or event.stream != "stdout":
                    continue
                *complete, pending = (pending + event.data.decode(errors="replace")).split("\n")
                while len(pending) > MAX_LINE:
                    complete.append(pending[:MAX_LINE])
                    pending = pending[MAX_LINE:]
                for line in complete:
                    lines.append(line)
                    await out.output(line)
        if pending:
            lines.append(pending)
            await out.output(pending)
        return code

    async def _remove(self, build_id: str) -> None:
        try:
            await self.runner.destroy(build_id)
        except CoveError as exc:
            log.error("removing build sandbox %s failed: %s", build_id, exc.message)


def _merged(argv: tuple[str, ...]) -> list[str]:
    """A shell-form RUN with its stderr joined to stdout, so the log keeps their order."""
    if argv[:2] == ("/bin/sh", "-c") and len(argv) == 3:
        return ["/bin/sh", "-c", f"exec 2>&1\n{argv[2]}"]
    return list(argv)


async def build_and_boot(
    ops: SandboxOps, builder: ImageBuilder, sandbox: Sandbox, plan: BuildPlan, out: BuildLog,
) -> Sandbox:  # fmt: skip
    """Build the sandbox's snapshot, then boot it: ``pending_build`` → ``building_snapshot``
    → ``starting`` → ``started``, or ``build_failed`` with the reason."""
    try:
        await ops.set_state(sandbox, S.BUILDING_SNAPSHOT)
        try:
            ref = await builder.build(sandbox.organization_id, plan, sandbox.snapshot, out)
        except BuildFailed as exc:
            await out.write(exc.reason)
            return await ops.build_failed(sandbox, exc.reason)
        except Exception as exc:  # noqa: BLE001 - never leave it pending
            log.exception("build of sandbox %s crashed", sandbox.id)
            return await ops.build_failed(sandbox, f"build failed: {exc}")
        sandbox.snapshot = ref
        await ops.set_state(sandbox, S.STARTING)
        await out.write("Starting the sandbox")
        return await ops.boot(sandbox)
    finally:
        await out.close()
