"""Secret values at rest: :class:`cove.store.sealing.AesGcmSealer` under a key of
their own, made once in the data dir (``secrets.key``).

Each value is bound to its secret's id and organization (the associated data), so
a ciphertext copied to another row does not decrypt. Unlike registry passwords,
secrets were never stored in plain text: a value that is not sealed is refused.
"""

from __future__ import annotations

import os
from pathlib import Path

from cove.errors import CoveError
from cove.hostfiles import secret_file
from cove.store.sealing import KEY_BYTES, AesGcmSealer


class SecretBox:
    """Encrypts and decrypts secret values with one key."""

    def __init__(self, key: bytes) -> None:
        """Raises ValueError: ``key`` is not 32 bytes long."""
        self._sealer = AesGcmSealer(key)

    @classmethod
    def in_dir(cls, data_dir: Path) -> SecretBox:
        """The box under ``<data dir>/secrets.key`` (made, mode 0600, when missing)."""
        return cls(secret_file(data_dir / "secrets.key", lambda: os.urandom(KEY_BYTES)))

    def seal(self, value: str, *, secret_id: str, organization_id: str) -> bytes:
        return self._sealer.seal(value, f"{organization_id}/{secret_id}").encode()

    def open(self, sealed: bytes, *, secret_id: str, organization_id: str) -> str:
        """Raises CoveError when the ciphertext was changed or made under another key."""
        stored = sealed.decode("ascii", "replace")
        try:
            if not self._sealer.is_sealed(stored):
                raise ValueError("not sealed")
            return self._sealer.open(stored, f"{organization_id}/{secret_id}")
        except ValueError as exc:
            raise CoveError(f"secret {secret_id} cannot be decrypted with this key") from exc
