"""Fingerprints of the secrets every API replica of one deployment must share (see
``cove.server.REPLICA_KEY_FILES``): the first replica records them, the others are
checked against them, so a replica started with secrets of its own fails at once
instead of failing to open what the others sealed or signed."""

from __future__ import annotations

import hashlib
import hmac

from sqlalchemy import select

from cove.store.models import KeyFingerprintRow
from cove.store.sql import SqlStore


def fingerprint(secret: bytes) -> str:
    """A one-way fingerprint of a (random, high-entropy) secret."""
    return hmac.new(b"cove key fingerprint", secret, hashlib.sha256).hexdigest()


class SqlFingerprints(SqlStore):
    def matches(self, name: str, secret: bytes) -> bool:
        """Record ``secret``'s fingerprint under ``name`` if none is; whether the
        recorded one is ``secret``'s."""
        mine = fingerprint(secret)
        with self.session() as s:
            found = s.scalars(select(KeyFingerprintRow.fingerprint)
                              .where(KeyFingerprintRow.name == name)).first()  # fmt: skip
            if found is None:
                s.add(KeyFingerprintRow(name=name, fingerprint=mine))
                return True
        return hmac.compare_digest(found, mine)
