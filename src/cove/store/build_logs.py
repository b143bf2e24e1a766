"""Build logs in the database (tables ``build_logs`` and ``build_log_chunks``), where
every API replica reads them (see :mod:`cove.core.buildlog`)."""

from __future__ import annotations

from sqlalchemy import delete, func, select, update

from cove.core.buildlog import LogInfo
from cove.core.sandbox import utcnow
from cove.store.models import BuildLogChunkRow, BuildLogRow
from cove.store.sql import SqlStore


class SqlBuildLogStore(SqlStore):
    """Implements :class:`cove.core.buildlog.BuildLogStore`."""

    def create(self, key: str, replica: str) -> None:
        with self.session() as s:
            s.execute(delete(BuildLogChunkRow).where(BuildLogChunkRow.log_id == key))
            s.execute(delete(BuildLogRow).where(BuildLogRow.id == key))
            s.flush()
            s.add(BuildLogRow(id=key, replica=replica, worker=None, done=False,
                              created_at=utcnow()))  # fmt: skip

    def append(self, key: str, data: bytes) -> None:
        with self.session() as s:
            if s.get(BuildLogRow, key) is None:
                return  # deleted with its sandbox or snapshot
            last = s.scalar(select(func.max(BuildLogChunkRow.seq))
                            .where(BuildLogChunkRow.log_id == key))  # fmt: skip
            s.add(BuildLogChunkRow(log_id=key, seq=(last or 0) + 1, data=data))

    def set_worker(self, key: str, worker: str | None) -> None:
        with self.session() as s:
            s.execute(update(BuildLogRow).where(BuildLogRow.id == key).values(worker=worker))

    def finish(self, key: str) -> None:
        with self.session() as s:
            s.execute(update(BuildLogRow).where(BuildLogRow.id == key).values(done=True))

    def info(self, key: str) -> LogInfo | None:
        with self.session() as s:
            row = s.get(BuildLogRow, key)
            return _info(row) if row is not None else None

    def read(self, key: str, after: int, limit: int) -> list[tuple[int, bytes]]:
        query = (select(BuildLogChunkRow.seq, BuildLogChunkRow.data)
                 .where(BuildLogChunkRow.log_id == key, BuildLogChunkRow.seq > after)
                 .order_by(BuildLogChunkRow.seq).limit(limit))  # fmt: skip
        with self.session() as s:
            return [(seq, bytes(data)) for seq, data in s.execute(query)]

    def unfinished(self) -> list[LogInfo]:
        with self.session() as s:
            return [_info(r) for r in s.scalars(select(BuildLogRow)
                                                .where(BuildLogRow.done.is_(False)))]  # fmt: skip

    def delete(self, key: str) -> None:
        with self.session() as s:
            s.execute(delete(BuildLogChunkRow).where(BuildLogChunkRow.log_id == key))
            s.execute(delete(BuildLogRow).where(BuildLogRow.id == key))


def _info(row: BuildLogRow) -> LogInfo:
    return LogInfo(row.id, row.replica, row.worker, row.done)
