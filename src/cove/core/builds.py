"""Building a sandbox's snapshot from a Dockerfile (``buildInfo``).

A temporary build sandbox is started from the base snapshot; each ``RUN`` is
executed in it as the ``USER`` so far (root by default, with the ``ENV``, ``ARG``
and ``WORKDIR`` so far) and its output goes, line by line, to the
:class:`BuildLog`. ``COPY``/``ADD`` repack what they name from the organization's
uploaded contexts (:mod:`cove.core.buildcontext`), upload that tar through the
agent and extract it inside the sandbox. The result is captured as a snapshot of
the organization named by the plan's digest (Dockerfile and context hashes), so
the same build is done once; its image config records the ENV, WORKDIR, USER,
ENTRYPOINT, CMD and LABELs. The build sandbox is always removed; a failed build
leaves no snapshot.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import uuid
from collections import deque
from contextlib import aclosing, nullcontext
from pathlib import Path

from cove.core.agent_types import Exited, Output
from cove.core.buildcopy import CopyStep
from cove.core.buildlog import BuildLog
from cove.core.config import Settings
from cove.core.contexts import ContextStore
from cove.core.coordination import KeyedLocks
from cove.core.dockerfile import SHOWN, BuildPlan
from cove.core.ops import SandboxOps
from cove.core.ports import ContainerSpec, ImageConfig, Resources, Runner
from cove.core.sandbox import Sandbox, SandboxState
from cove.core.snapshots import Snapshot, SnapshotService
from cove.core.toolbox import agent_client
from cove.errors import BadRequest, CoveError, NotFound

S = SandboxState
log = logging.getLogger(__name__)
RUN_TIMEOUT = 1800.0
TAIL_LINES = 20
MAX_LINE = 64 * 1024  # characters; a longer line is logged in pieces
DELETED = "the build was ended: its snapshot was deleted"
# Characters of those last lines a failure's reason keeps: the reason is in every
# listing of the organization's sandboxes (and no quota counts a failed one); the
# whole output is in the build log.
MAX_TAIL = 8 * 1024
INTERRUPTED = ("the build was interrupted by a server restart or the loss of the API "
               "replica running it; create it again")


class BuildFailed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def snapshot_name(plan: BuildPlan) -> str:
    return f"dockerfile-{plan.digest[:16]}"


def build_digest(plan: BuildPlan) -> str:
    """What a built snapshot records as its digest: the plan's."""
    return f"build:{plan.digest}"


class ImageBuilder:
    """Turns a :class:`BuildPlan` into a snapshot ref, one build per Dockerfile at a time."""

    def __init__(
        self, *, settings: Settings, runner: Runner, snapshots: SnapshotService,
        contexts: ContextStore | None = None,
    ) -> None:  # fmt: skip
        self.settings = settings
        self.runner = runner
        self.snapshots = snapshots
        self.contexts = contexts
        self._locks: KeyedLocks[str] = KeyedLocks()

    def cached(self, organization_id: str, plan: BuildPlan) -> str | None:
        """The ref of an active snapshot of the organization built from the same plan
        (Dockerfile and contexts), if any."""
        try:
            return self.snapshots.ref_for(organization_id, snapshot_name(plan))
        except (NotFound, BadRequest):
            pass
        digest = build_digest(plan)
        for snap in self.snapshots.store.list(organization_id):
            if snap.digest == digest and snap.state == "active":
                return snap.id
        return None

    async def build(
        self, organization_id: str, plan: BuildPlan, base_ref: str, out: BuildLog,
        target: Snapshot | None = None,
    ) -> str:  # fmt: skip
        """The ref of the plan's snapshot, built now unless it exists already. With
        ``target`` (a stored ``building`` record), the files go to that snapshot: copied
        from an earlier build of the same plan if there is one, else built.

        Raises:
            BuildFailed: a step failed (the reason names it and ends with its output).
        """
        name = target.name if target is not None else snapshot_name(plan)
        contexts = await self._contexts(organization_id, plan)
        pinned = self.contexts.pinned(contexts) if self.contexts else nullcontext()
        with pinned:  # (kept from being pruned or evicted while the build reads them)
            async with self._locks.hold(f"{organization_id}/{plan.digest}"):
                ref = self.cached(organization_id, plan)
                if ref is not None and target is None:
                    await out.write(f"Using cached snapshot {name} (no rebuild)")
                    return ref
                if ref is not None and target is not None:
                    return await self._clone(organization_id, plan, ref, target, out)
                build_id = f"build-{uuid.uuid4()}"
                await out.write(f"Building snapshot {name} from {plan.base}")
                out.set_worker(build_id)  # removed by another replica if this one dies
                try:
                    await self._run_steps(build_id, plan, base_ref, contexts, out)
                    config = self._config(organization_id, plan, base_ref)
                    try:
                        snap = await self.snapshots.create_from_build(
                            organization_id, name, build_id, config, target, build_digest(plan)
                        )
                    except CoveError as exc:
                        raise BuildFailed(f"capturing the snapshot failed: {exc.message}") from exc
                finally:
                    await self._remove(build_id)
                    out.set_worker(None)
                await out.write(f"Snapshot {name} built")
                return snap.id

    async def _clone(
        self, organization_id: str, plan: BuildPlan, ref: str, target: Snapshot, out: BuildLog
    ) -> str:
        """Make ``target`` a copy of ``ref``, built before from the same plan."""
        await out.write(f"Using the cached build of this image (no rebuild) for {target.name}")
        config = self._config(organization_id, plan, ref)
        try:
            await self.snapshots.clone_for_build(target, ref, config, build_digest(plan))
        except CoveError as exc:
            raise BuildFailed(f"copying the cached build failed: {exc.message}") from exc
        await out.write(f"Snapshot {target.name} built")
        return target.id

    async def _contexts(self, organization_id: str, plan: BuildPlan) -> list[Path]:
        """The plan's contexts, here (fetched from the store the replicas share)."""
        if not plan.context_hashes:
            return []
        store = self.contexts
        if store is None:
            raise BuildFailed("this server keeps no build contexts")
        try:
            return [await asyncio.to_thread(store.fetched, organization_id, h)
                    for h in plan.context_hashes]  # fmt: skip
        except CoveError as exc:
            raise BuildFailed(exc.message) from exc

    def _config(self, organization_id: str, plan: BuildPlan, base_ref: str) -> ImageConfig:
        """The built image's config: the base's, then what the Dockerfile set."""
        try:
            base = self.snapshots.get(organization_id, base_ref).image_config or {}
        except NotFound:
            base = {}
        entrypoint = plan.entrypoint or tuple(base.get("entrypoint") or ())
        cmd = plan.cmd or (() if plan.entrypoint else tuple(base.get("cmd") or ()))
        return ImageConfig(
            env={**(base.get("env") or {}), **plan.env},
            workdir=plan.workdir or base.get("workdir"),
            # over a snapshot not made from an image, sandboxes run as daytona by default
            user=plan.user or base.get("user") or (None if base else "daytona"),
            entrypoint=entrypoint, cmd=cmd,
            labels={**(base.get("labels") or {}), **dict(plan.labels)},
        )  # fmt: skip

    async def _run_steps(
        self, build_id: str, plan: BuildPlan, base_ref: str, contexts: list[Path],
        out: BuildLog,
    ) -> None:  # fmt: skip
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
        user = "root"
        total = len(plan.steps)
        for number, step in enumerate(plan.steps, 1):
            if out.discarded():  # its snapshot was deleted (its build sandbox maybe first)
                raise BuildFailed(DELETED)
            await out.write(f"Step {number}/{total} : {step.text}")
            env.update(step.env)
            where = f"step {number}/{total} '{_cut(step.text)}'"
            if step.kind == "WORKDIR":
                await self._exec(build_id, where, ["mkdir", "-p", step.path], env, None, out)
                cwd = step.path
            elif step.kind == "USER":
                user = step.user
            elif step.kind in ("COPY", "ADD"):
                copy = CopyStep(self.runner, build_id, self.settings.data_dir / "build-tmp",
                                s.default_disk * 2**30)  # fmt: skip
                try:
                    argv = await copy.upload(contexts, step)
                except CoveError as exc:
                    raise BuildFailed(f"build failed at {where}: {exc.message}") from exc
                await self._exec(build_id, where, argv, {}, None, out)
            elif step.kind == "RUN":
                run_env = {**dict(step.args), **env}
                await self._exec(build_id, where, _merged(step.argv), run_env, cwd, out, user)

    async def _exec(
        self, build_id: str, where: str, argv: list[str], env: dict[str, str],
        cwd: str | None, out: BuildLog, user: str = "root",
    ) -> None:  # fmt: skip
        lines: deque[str] = deque(maxlen=TAIL_LINES)
        try:
            code = await self._stream(build_id, argv, env, cwd, out, lines, user)
        except CoveError as exc:
            raise BuildFailed(f"build failed at {where}: {exc}") from exc
        if code != 0:
            tail = "\n".join(lines)
            tail = tail if len(tail) <= MAX_TAIL else f"...{tail[-MAX_TAIL:]}"
            raise BuildFailed(f"build failed at {where}: exit code {code}\n{tail}".rstrip())

    async def _stream(
        self, build_id: str, argv: list[str], env: dict[str, str], cwd: str | None,
        out: BuildLog, lines: deque[str], user: str,
    ) -> int:  # fmt: skip
        """Run ``argv`` as ``user`` through the build sandbox's agent; each output line
        goes to the log as soon as it is printed (a line longer than MAX_LINE in pieces).
        Returns the exit code."""
        agent = agent_client(self.runner, build_id, user, {})
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
        await remove_worker(self.runner, build_id)


async def remove_worker(runner: Runner, build_id: str) -> None:
    """Remove a build sandbox (best effort: a failure is logged)."""
    try:
        await runner.destroy(build_id)
    except CoveError as exc:
        log.error("removing build sandbox %s failed: %s", build_id, exc.message)


async def remove_left_worker(runner: Runner, build_id: str) -> None:
    """Remove the build sandbox another replica's build left, if it is still there
    (listing the runners first tells a routing runner which one has it)."""
    try:
        if build_id not in await runner.list_ids():
            return
    except CoveError as exc:
        log.error("listing sandboxes to remove build sandbox %s failed: %s", build_id,
                  exc.message)  # fmt: skip
    await remove_worker(runner, build_id)


def _cut(text: str) -> str:
    """An instruction as a failure's reason names it: its first SHOWN characters."""
    return text if len(text) <= SHOWN else f"{text[:SHOWN]}..."


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
