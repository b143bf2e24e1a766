"""Secrets the database keeps encrypted: AES-256-GCM under a key of the data dir.

A sealed value is ``cove-sealed:v1:`` and the URL-safe base64 of a random 96-bit
nonce followed by the ciphertext and its tag; the record's id is the associated
data, so a sealed value opens only in the record it was written for. Values
without the prefix were stored before sealing existed: they read as they are
(and the server seals them at start, see ``RegistryService.seal_plain``).
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "cove-sealed:v1:"
KEY_BYTES = 32
_NONCE = 12


class AesGcmSealer:
    """:class:`cove.core.ports.Sealer` with AES-256-GCM."""

    def __init__(self, key: bytes) -> None:
        """Raises ValueError: ``key`` is not 32 bytes long."""
        if len(key) != KEY_BYTES:
            raise ValueError(f"a sealing key has {KEY_BYTES} bytes, not {len(key)}")
        self._aead = AESGCM(key)

    def seal(self, secret: str, context: str) -> str:
        nonce = os.urandom(_NONCE)
        sealed = self._aead.encrypt(nonce, secret.encode(), context.encode())
        return PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, stored: str, context: str) -> str:
        if not self.is_sealed(stored):
            return stored
        try:
            raw = base64.urlsafe_b64decode(stored[len(PREFIX) :].encode())
            return self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], context.encode()).decode()
        except (InvalidTag, binascii.Error, ValueError) as exc:
            raise ValueError("the sealed value does not open") from exc

    def is_sealed(self, stored: str) -> bool:
        return stored.startswith(PREFIX)
