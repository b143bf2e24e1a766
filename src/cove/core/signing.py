"""Signed file URLs (``sandbox.download_url`` of the SDKs).

Each sandbox has a signing key of its own, kept by the server (never inside the
sandbox), handed to its organization by ``GET /sandbox/{id}/signing-key`` and
replaced by ``POST .../signing-key/rotate``. A client signs a URL itself, as the
SDKs do: ``signature = "v1_" + base64url_nopad(HMAC-SHA256(key,
"v1:files:{METHOD}:{path}:{expires}"))`` with ``expires`` a Unix time (0: never).
The URL then works without an API key, for that sandbox, method and path only,
until it expires or the key is rotated or the sandbox deleted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from typing import Protocol

from cove.errors import Unauthorized

PREFIX = "v1_"
# A Unix time in ASCII digits (str.isdigit() holds for "²" too, which int() refuses).
EXPIRES = re.compile(r"[0-9]{1,12}")


class KeyStore(Protocol):
    """Where sandboxes' signing keys live (the server's data dir)."""

    def get(self, sandbox_id: str) -> str | None: ...

    def put(self, sandbox_id: str, key: str) -> None: ...

    def delete(self, sandbox_id: str) -> None: ...


def signature(key: str, method: str, path: str, expires: int) -> str:
    """The SDKs' v1 signature of a file URL."""
    canonical = f"v1:files:{method}:{path}:{expires}".encode()
    digest = hmac.new(key.encode(), canonical, hashlib.sha256).digest()
    return PREFIX + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class UrlSigner:
    """The sandboxes' signing keys and the check of signed file URLs."""

    def __init__(self, keys: KeyStore) -> None:
        self.keys = keys

    def key(self, sandbox_id: str) -> str:
        """The sandbox's signing key (made on first use)."""
        return self.keys.get(sandbox_id) or self.rotate(sandbox_id)

    def rotate(self, sandbox_id: str) -> str:
        """A new key for the sandbox: every URL signed before stops working."""
        key = secrets.token_urlsafe(32)
        self.keys.put(sandbox_id, key)
        return key

    def forget(self, sandbox_id: str) -> None:
        """Drop the key of a deleted sandbox."""
        self.keys.delete(sandbox_id)

    def check(self, sandbox_id: str, method: str, path: str, expires: str | None,
              given: str | None) -> None:  # fmt: skip
        """Accept a signed request, or raise.

        Raises:
            Unauthorized: no, a malformed, a wrong (other sandbox, path, method or key)
                or an expired signature.
        """
        if not given or expires is None or not EXPIRES.fullmatch(expires):
            raise Unauthorized("a signed URL needs expires and signature")
        key = self.keys.get(sandbox_id)
        if key is None or not hmac.compare_digest(
            signature(key, method, path, int(expires)).encode(), given.encode()
        ):
            raise Unauthorized("invalid signature")
        if int(expires) != 0 and int(expires) < time.time():
            raise Unauthorized("the signed URL has expired")
