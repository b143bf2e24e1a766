"""The runners registry and each sandbox's runner (:class:`cove.core.fleet.RunnerStore`)."""

from __future__ import annotations

import builtins
import uuid
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from cove.core.fleet import IN_ARCHIVE, Allocation, RunnerInfo, RunnerState, VolumeHome
from cove.core.ports import Capacity
from cove.core.sandbox import SandboxState, utcnow
from cove.errors import Conflict, NotFound
from cove.store.models import RunnerRow, SandboxRow, VolumeRow
from cove.store.sql import SqlStore, _aware

S = SandboxState
# States in which a sandbox holds no CPU or memory on its runner.
_IDLE = [str(s) for s in (S.STOPPED, S.ARCHIVED, S.ERROR, S.BUILD_FAILED, S.DESTROYED)]


class SqlRunnerStore(SqlStore):
    """Implements :class:`cove.core.fleet.RunnerStore`."""

    def list(self) -> builtins.list[RunnerInfo]:
        with self.session() as s:
            return [_info(r) for r in s.scalars(select(RunnerRow).order_by(RunnerRow.name))]

    def get(self, id_or_name: str) -> RunnerInfo:
        with self.session() as s:
            row = s.scalars(select(RunnerRow).where(
                (RunnerRow.id == id_or_name) | (RunnerRow.name == id_or_name))).first()  # fmt: skip
            if row is None:
                raise NotFound(f"Runner {id_or_name} not found")
            return _info(row)

    def add(self, name: str, url: str) -> RunnerInfo:
        with self.session() as s:
            if s.scalars(select(RunnerRow).where(RunnerRow.url == url)).first() is not None:
                raise Conflict(f"a runner at {url} is registered")
        row = RunnerRow(id=uuid.uuid4().hex[:16], name=name, url=url, state=RunnerState.READY,
                        reachable=True, created_at=utcnow())  # fmt: skip
        try:
            with self.session() as s:
                s.add(row)
        except IntegrityError as exc:
            raise Conflict(f"a runner called {name} is registered") from exc
        return self.get(row.id)

    def _update(self, runner_id: str, **values: object) -> None:
        with self.session() as s:
            s.execute(update(RunnerRow).where(RunnerRow.id == runner_id).values(**values))

    def set_url(self, runner_id: str, url: str | None) -> None:
        self._update(runner_id, url=url)

    def set_state(self, runner_id: str, state: RunnerState) -> None:
        self._update(runner_id, state=str(state))

    def set_reachable(self, runner_id: str, reachable: bool) -> None:
        self._update(runner_id, reachable=reachable)

    def heartbeat(self, runner_id: str, capacity: Capacity, at: datetime) -> None:
        self._update(runner_id, cpu=capacity.cpu, memory=capacity.memory,
                     memory_free=capacity.memory_free, disk=capacity.disk,
                     disk_free=capacity.disk_free, sandboxes=capacity.sandboxes,
                     max_sandboxes=capacity.max_sandboxes, last_heartbeat=at)  # fmt: skip

    def remove(self, runner_id: str) -> None:
        with self.session() as s:
            held = s.scalar(select(func.count()).select_from(SandboxRow)
                            .where(SandboxRow.runner_id == runner_id))  # fmt: skip
            if held:
                raise Conflict(f"{held} sandboxes are on the runner: drain it first")
            kept = list(s.scalars(select(VolumeRow.name).where(VolumeRow.home == runner_id)
                                  .order_by(VolumeRow.name).limit(11)))  # fmt: skip
            if kept:  # a drain moves them to the shared archive store
                names = ", ".join(kept[:10]) + (", ..." if len(kept) > 10 else "")
                raise Conflict(f"volumes keep their data on the runner ({names}): delete "
                               f"them or move their data first (docs/deployment.md)")  # fmt: skip
            row = s.get(RunnerRow, runner_id)
            if row is not None:
                s.delete(row)

    def runner_of(self, sandbox_id: str) -> str | None:
        with self.session() as s:
            return s.scalar(select(SandboxRow.runner_id).where(SandboxRow.id == sandbox_id))

    def assign(self, sandbox_id: str, runner_id: str | None) -> bool:
        with self.session() as s:
            done = s.execute(update(SandboxRow).where(SandboxRow.id == sandbox_id)
                             .values(runner_id=runner_id))  # fmt: skip
            return bool(done.rowcount)  # type: ignore[attr-defined]

    def sandboxes_on(self, runner_id: str) -> builtins.list[str]:
        with self.session() as s:
            return list(s.scalars(select(SandboxRow.id).where(SandboxRow.runner_id == runner_id)
                                  .order_by(SandboxRow.seq)))  # fmt: skip

    def allocations(self) -> dict[str, Allocation]:
        live = SandboxRow.state.not_in(_IDLE)
        query = (select(SandboxRow.runner_id, func.count(),
                        func.sum(SandboxRow.disk),
                        func.sum(SandboxRow.cpu).filter(live),
                        func.sum(SandboxRow.memory).filter(live))
                 .where(SandboxRow.runner_id.is_not(None))
                 .group_by(SandboxRow.runner_id))  # fmt: skip
        with self.session() as s:
            return {rid: Allocation(cpu=cpu or 0, memory=mem or 0, disk=disk or 0,
                                    sandboxes=count)
                    for rid, count, disk, cpu, mem in s.execute(query) if rid}  # fmt: skip


    def volume_homes(self, volume_ids: builtins.list[str]) -> dict[str, VolumeHome]:
        if not volume_ids:
            return {}
        query = select(VolumeRow.id, VolumeRow.name, VolumeRow.home).where(
            VolumeRow.id.in_(volume_ids))  # fmt: skip
        with self.session() as s:
            return {vid: VolumeHome(name, home) for vid, name, home in s.execute(query)}

    def bind_volumes(self, volume_ids: builtins.list[str], home: str) -> None:
        unbound = VolumeRow.id.in_(volume_ids) & (VolumeRow.home.is_(None)
                                                  | (VolumeRow.home == IN_ARCHIVE))  # fmt: skip
        with self.session() as s:  # one statement: of two binding at once, the first wins
            s.execute(update(VolumeRow).where(unbound).values(home=home))

    def volumes_on(self, runner_id: str) -> dict[str, str]:
        query = (select(VolumeRow.id, VolumeRow.name).where(VolumeRow.home == runner_id)
                 .order_by(VolumeRow.name))  # fmt: skip
        with self.session() as s:
            return dict(s.execute(query).tuples().all())

    def move_volume(self, volume_id: str, home: str, to: str | None) -> bool:
        with self.session() as s:
            done = s.execute(update(VolumeRow).where(VolumeRow.id == volume_id,
                                                     VolumeRow.home == home).values(home=to))
            return bool(getattr(done, "rowcount", 0))


def _info(row: RunnerRow) -> RunnerInfo:
    return RunnerInfo(
        id=row.id, name=row.name, url=row.url, state=RunnerState(row.state),
        reachable=row.reachable,
        capacity=Capacity(cpu=row.cpu, memory=row.memory, memory_free=row.memory_free,
                          disk=row.disk, disk_free=row.disk_free, sandboxes=row.sandboxes,
                          max_sandboxes=row.max_sandboxes),
        last_heartbeat=None if row.last_heartbeat is None else _aware(row.last_heartbeat),
        created_at=_aware(row.created_at),
    )  # fmt: skip
