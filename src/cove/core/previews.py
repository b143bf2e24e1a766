"""Preview URLs: who may reach a port of a sandbox through Cove's proxy.

Two kinds of token, both HMACs under a server secret (no storage needed):

* the *preview token* of a sandbox (``X-Daytona-Preview-Token``): stable for
  the sandbox's life, valid for every port;
* a *signed token*, embedded in the URL itself: names the sandbox and port,
  expires at a time it carries, and can be expired early (its signature is
  then remembered until it would have expired anyway).

A public sandbox needs no token at all.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from cove.errors import BadRequest

REVOKED_SECONDS = 1.0  # another replica's early expiry is seen within this
MAX_SIGNED_SECONDS = 24 * 3600
DEFAULT_SIGNED_SECONDS = 60
PRUNE_AT = 1024  # tokens expired early, kept in memory before the first pruning


@dataclass(frozen=True)
class Signed:
    """What a valid signed token grants."""

    sandbox_id: str
    port: int
    expires: int


class Revocations(Protocol):
    """Signed tokens expired early (by hash), in the server's database: seen by every
    API replica, and after a restart."""

    def add(self, token_hash: str, expires: int) -> None: ...

    def has(self, token_hash: str) -> bool: ...


class PreviewTokens:
    """Issues and checks preview tokens under ``secret``; with ``revocations``, a
    token expired early through another replica stops working here within
    ``REVOKED_SECONDS``."""

    def __init__(self, secret: bytes, revocations: Revocations | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self._secret = secret
        self._revoked: dict[str, int] = {}  # signed token -> its expiry
        self._prune_at = PRUNE_AT  # entries in _revoked when the expired ones go next
        self._lock = threading.Lock()
        self.revocations = revocations
        self._clock = clock
        self._shared: dict[str, tuple[bool, float]] = {}  # token -> (revoked, until)

    def token(self, sandbox_id: str) -> str:
        """The preview token of a sandbox (same for every port)."""
        mac = hmac.new(self._secret, b"preview " + sandbox_id.encode(), hashlib.sha256)
        return mac.hexdigest()[:40]

    def check(self, sandbox_id: str, token: str | None) -> bool:
        """Whether ``token`` is the sandbox's preview token (any text: as bytes, since
        ``compare_digest`` refuses strings of other than ASCII characters)."""
        return token is not None and hmac.compare_digest(
            self.token(sandbox_id).encode(), token.encode()
        )

    def sign(
        self, sandbox_id: str, port: int, expires_in: int | None, now: float | None = None
    ) -> str:
        """A signed token for ``port`` of the sandbox, valid ``expires_in`` seconds."""
        seconds = DEFAULT_SIGNED_SECONDS if expires_in is None else expires_in
        if not 1 <= seconds <= MAX_SIGNED_SECONDS:
            raise BadRequest(f"expiresInSeconds must be between 1 and {MAX_SIGNED_SECONDS}")
        check_port(port)
        expires = int((now or time.time()) + seconds)
        body = uuid.UUID(sandbox_id).bytes + struct.pack("!HI", port, expires)
        mac = hmac.new(self._secret, b"signed " + body, hashlib.sha256).digest()[:14]
        return base64.b32encode(body + mac).decode().rstrip("=").lower()

    def verify(self, token: str, now: float | None = None) -> Signed | None:
        """What ``token`` grants, or None: forged, malformed, expired or revoked."""
        found = _decoded(token)
        if found is None:
            return None
        token, raw = found
        body, mac = raw[:22], raw[22:]
        good = hmac.new(self._secret, b"signed " + body, hashlib.sha256).digest()[:14]
        if not hmac.compare_digest(mac, good):
            return None
        port, expires = struct.unpack("!HI", body[16:])
        with self._lock:
            if expires <= (now or time.time()) or token in self._revoked:
                return None
        if self._revoked_elsewhere(token):
            return None
        return Signed(str(uuid.UUID(bytes=body[:16])), port, expires)

    def _revoked_elsewhere(self, token: str) -> bool:
        """Whether another replica expired ``token`` (asked at most once a second)."""
        if self.revocations is None:
            return False
        now = self._clock()
        known = self._shared.get(token)
        if known is not None and now < known[1]:
            return known[0]
        revoked = self.revocations.has(_digest(token))
        if len(self._shared) >= 10_000:
            self._shared.clear()
        self._shared[token] = (revoked, now + REVOKED_SECONDS)
        return revoked

    def expire(self, sandbox_id: str, port: int, token: str) -> None:
        """Make a signed token invalid now (no error when it is already)."""
        found, grant = _decoded(token), self.verify(token)
        if found is None or grant is None or grant.sandbox_id != sandbox_id or grant.port != port:
            return
        token = found[0]
        now = time.time()
        with self._lock:
            # Those past their expiry go once the entries have doubled, not on every
            # call: any key signs and expires tokens, and a walk of all of them each
            # time made every expiry cost as many steps as there were before.
            if len(self._revoked) >= self._prune_at:
                self._revoked = {t: e for t, e in self._revoked.items() if e > now}
                self._prune_at = max(PRUNE_AT, 2 * len(self._revoked))
            self._revoked[token] = grant.expires
        if self.revocations is not None:
            self.revocations.add(_digest(token), grant.expires)


def _decoded(token: str) -> tuple[str, bytes] | None:
    """A signed token as :meth:`PreviewTokens.sign` spells it, and its bytes; None when
    malformed. A token is known (and expired early) by that one spelling: base32's
    last letter carries two bits no byte holds, and a host name's letters are any
    case, so an expired token spelled otherwise must not pass as another one."""
    try:
        raw = base64.b32decode(token.upper() + "=" * (-len(token) % 8))
    except ValueError:
        return None
    canonical = base64.b32encode(raw).decode().rstrip("=").lower()
    if len(raw) != 36 or canonical != token.lower():
        return None
    return canonical, raw


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_port(port: int) -> None:
    if not 1 <= port <= 65535:
        raise BadRequest(f"port must be between 1 and 65535, got {port}")
