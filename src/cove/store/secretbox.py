"""Secret values at rest: AES-256-GCM under a key made once in the data dir.

Each value gets a fresh 96-bit nonce (stored before the ciphertext) and is bound
to its secret's id and organization as associated data, so a ciphertext copied
to another row does not decrypt.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cove.errors import CoveError
from cove.hostfiles import secret_file

NONCE = 12


class SecretBox:
    """Encrypts and decrypts secret values with one key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the secrets key must be 32 bytes")
        self._aead = AESGCM(key)

    @classmethod
    def in_dir(cls, data_dir: Path) -> SecretBox:
        """The box under ``<data dir>/secrets.key`` (made, mode 0600, when missing)."""
        return cls(secret_file(data_dir / "secrets.key", lambda: os.urandom(32)))

    def seal(self, value: str, *, secret_id: str, organization_id: str) -> bytes:
        nonce = os.urandom(NONCE)
        bound = f"{organization_id}/{secret_id}".encode()
        return nonce + self._aead.encrypt(nonce, value.encode(), bound)

    def open(self, sealed: bytes, *, secret_id: str, organization_id: str) -> str:
        """Raises CoveError when the ciphertext was changed or made under another key."""
        bound = f"{organization_id}/{secret_id}".encode()
        try:
            return self._aead.decrypt(sealed[:NONCE], sealed[NONCE:], bound).decode()
        except InvalidTag as exc:
            raise CoveError(f"secret {secret_id} cannot be decrypted with this key") from exc
