"""Sandboxes' URL signing keys: one file each (0600) in ``<data dir>/signing-keys`` on
one host, or in the database (sealed) where several API replicas share it."""

from __future__ import annotations

import os
import re
from pathlib import Path

from sqlalchemy import Engine, delete

from cove.hostfiles import FILE_MODE, private_dir
from cove.store.models import SigningKeyRow
from cove.store.sealing import AesGcmSealer
from cove.store.sql import SqlStore

_ID = re.compile(r"^[0-9a-f-]{1,64}$")


class FileKeyStore:
    """Keys under ``root`` (a directory of the data dir, root's alone)."""

    def __init__(self, root: Path) -> None:
        self.root = private_dir(root)

    def _path(self, sandbox_id: str) -> Path | None:
        return self.root / sandbox_id if _ID.match(sandbox_id) else None

    def get(self, sandbox_id: str) -> str | None:
        path = self._path(sandbox_id)
        if path is None:
            return None
        try:
            return path.read_text().strip() or None
        except FileNotFoundError:
            return None

    def put(self, sandbox_id: str, key: str) -> None:
        path = self._path(sandbox_id)
        if path is None:
            raise ValueError(f"invalid sandbox id {sandbox_id!r}")
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
        with os.fdopen(fd, "w") as f:
            f.write(key)
        os.replace(tmp, path)

    def delete(self, sandbox_id: str) -> None:
        path = self._path(sandbox_id)
        if path is not None:
            path.unlink(missing_ok=True)


class SqlSigningKeyStore(SqlStore):
    """Keys in the database (table ``signing_keys``), sealed under the data dir's
    ``registry.key``: every API replica on the database signs and checks with them."""

    def __init__(self, engine: Engine, sealer: AesGcmSealer) -> None:
        super().__init__(engine)
        self._sealer = sealer

    def get(self, sandbox_id: str) -> str | None:
        with self.session() as s:
            row = s.get(SigningKeyRow, sandbox_id)
            return None if row is None else self._sealer.open(row.sealed, _context(sandbox_id))

    def put(self, sandbox_id: str, key: str) -> None:
        sealed = self._sealer.seal(key, _context(sandbox_id))
        with self.session() as s:
            row = s.get(SigningKeyRow, sandbox_id)
            if row is None:
                s.add(SigningKeyRow(sandbox_id=sandbox_id, sealed=sealed))
            else:
                row.sealed = sealed

    def delete(self, sandbox_id: str) -> None:
        with self.session() as s:
            s.execute(delete(SigningKeyRow).where(SigningKeyRow.sandbox_id == sandbox_id))


def _context(sandbox_id: str) -> str:
    return f"signing-key:{sandbox_id}"
