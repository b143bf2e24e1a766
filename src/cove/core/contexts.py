"""Build contexts: the archives the SDK's ``Image.add_local_file`` /
``add_local_dir`` upload before a Dockerfile build.

The SDK asks ``GET /api/object-storage/push-access`` for S3 credentials and
uploads each context to ``<organization id>/<hash>/context.tar`` (skipping it
when a ``HEAD`` finds it: contexts are content-addressed). Cove answers with
credentials of its own, scoped to the caller's organization and valid for
:data:`TTL` (never the API key), and serves the small S3 subset the uploader
uses (see ``api/routes/object_storage.py``). The archives live under
``<data dir>/contexts/<organization id>/<hash>.tar``, 0600; a build reads only
the organization's own.

With several API replicas, a context uploaded through one is built on another:
then the contexts live in an object store they share (:class:`SharedObjects`, the
S3 bucket of ``COVE_ARCHIVE_S3_*``), multipart uploads included (the bucket's own,
so each part may reach another replica), and the data dir keeps a copy of each one
a build of this replica fetched.

The data dir's share is bounded per organization (:attr:`ContextStore.max_total`:
contexts, parts of uploads, and bodies on their way in, reserved at their full
size before they are read). A body that would not fit makes room by removing the
organization's least recently used contexts, never one used within :data:`TTL` or
by a build under way: the SDK asks (``HEAD``) before each build and uploads again
what is gone, so a removed context costs an upload, never a build. Contexts unused
for :attr:`ContextStore.keep_seconds` are removed (:meth:`ContextStore.prune`, every
:data:`PRUNE_SECONDS`, as are uploads nobody finished). The shared bucket's own
objects are the operator's to expire (a lifecycle rule).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import shutil
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from cove.core import sigv4
from cove.core.periodic import every
from cove.errors import BadRequest, CoveError

log = logging.getLogger(__name__)

TTL = 3600  # seconds the push credentials are good for
BUCKET = "cove-contexts"
REGION = "us-east-1"
MAX_PARTS = 10_000
PRUNE_SECONDS = 600
SHARE = f" (COVE_MAX_CONTEXTS_MB; contexts used in the last {TTL // 60} minutes are kept)"
_HASH = re.compile(r"^[0-9a-f]{32}$")
_UPLOAD = re.compile(r"^[0-9a-f]{32}$")
_SHARED_UPLOAD = re.compile(r"^[A-Za-z0-9._~+/=-]{1,1024}$")  # the bucket's upload ids


class AccessDenied(Exception):
    """The request may not do this (S3's ``AccessDenied``)."""


class NoSuchKey(Exception):
    """The object or upload does not exist (S3's ``NoSuchKey``/``NoSuchUpload``)."""


class TooLarge(Exception):
    """The object would exceed the context size limit (S3's ``EntityTooLarge``)."""


@dataclass(frozen=True)
class PushAccess:
    access_key: str
    secret: str
    session_token: str
    organization_id: str


@dataclass(frozen=True)
class Stored:
    size: int
    etag: str
    modified: float


class SharedObjects(Protocol):
    """An object store every API replica reaches (:mod:`cove.store.s3_contexts`);
    ``name`` is ``<organization id>/<hash>.tar``."""

    def size(self, name: str) -> int | None:
        """The object's size, None: there is none."""

    def upload(self, name: str, path: Path) -> None: ...

    def download(self, name: str, into: IO[bytes], limit: int) -> None:
        """Raises TooLarge beyond ``limit`` bytes."""

    def start(self, name: str) -> str:
        """A new multipart upload's id."""

    def parts(self, name: str, upload_id: str) -> dict[int, tuple[str, int]]:
        """The upload's parts so far (number -> ETag, size). Raises NoSuchKey."""

    def put_part(self, name: str, upload_id: str, number: int, path: Path) -> str:
        """Store a part; its ETag. Raises NoSuchKey."""

    def complete(self, name: str, upload_id: str, parts: list[tuple[int, str]]) -> None: ...

    def abort(self, name: str, upload_id: str) -> None: ...

    def remove_stale(self, before: float) -> int: ...


class ContextStore:
    """Content-addressed context archives per organization, and the credentials
    that may upload them."""

    def __init__(self, root: Path, key: bytes, max_bytes: int,
                 shared: SharedObjects | None = None, *, max_total: int | None = None,
                 keep_seconds: float = 7 * 86400) -> None:  # fmt: skip
        self.root = root
        self._key = key
        self.max_bytes = max_bytes
        self.max_total = max(max_total or 4 * max_bytes, max_bytes)  # per organization
        self.keep_seconds = keep_seconds
        self.shared = shared
        # Whether an API key (by id) still works: set by the server (see ``authorize``).
        self.key_works: Callable[[str], bool] | None = None
        self._lock = threading.Lock()  # over the reservations, the usage and evictions
        self._reserved: Counter[str] = Counter()  # organization -> bytes of bodies coming in
        self._pinned: Counter[Path] = Counter()  # contexts builds under way read
        (root / ".uploads").mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(root, 0o700)
        self.remove_stale()

    async def run(self) -> None:
        """Prune (:meth:`prune`) every :data:`PRUNE_SECONDS` until cancelled."""
        await every(PRUNE_SECONDS, lambda: asyncio.to_thread(self.prune),
                    "pruning build contexts", wait_first=True)  # fmt: skip

    def prune(self, now: float | None = None) -> int:
        """Remove uploads nobody finished and contexts unused for :attr:`keep_seconds`
        (here; not the shared bucket's); returns how many."""
        now = now or time.time()
        with self._lock:
            unused = [p for p, used in self._contexts(None) if used < now - self.keep_seconds]
        for path in unused:
            path.unlink(missing_ok=True)
        return len(unused) + self.remove_stale(now)

    def reserve(self, organization_id: str, wanted: int) -> int:
        """Room for a body of up to ``wanted`` bytes in the organization's share, held
        until :meth:`release` (the bytes it may have: fewer when the share is nearly
        full and nothing can be removed). Blocking I/O.

        Raises:
            TooLarge: no room at all.
        """
        with self._lock:
            room = self.max_total - self._used(organization_id)
            if room < wanted:
                room += self._evict(organization_id, wanted - room)
            if room <= 0:
                raise TooLarge(f"the organization's build contexts take {self.max_total - room} "
                               f"bytes of the {self.max_total} it may keep here{SHARE}")
            granted = min(room, wanted)
            self._reserved[organization_id] += granted
            return granted

    def release(self, organization_id: str, granted: int) -> None:
        """The body :meth:`reserve` made room for is in (or gone)."""
        with self._lock:
            self._reserved[organization_id] -= granted
            if self._reserved[organization_id] <= 0:
                del self._reserved[organization_id]

    @contextmanager
    def pinned(self, paths: Iterable[Path]) -> Iterator[None]:
        """Keep ``paths`` (a build's contexts) from being removed while in use."""
        held = list(paths)
        with self._lock:
            self._pinned.update(held)
        try:
            yield
        finally:
            with self._lock:
                self._pinned.subtract(held)
                self._pinned += Counter()  # (drops the zeros)

    def _contexts(self, organization_id: str | None) -> list[tuple[Path, float]]:
        """The contexts kept here (of one organization, or of all) not pinned, and when
        each was last used, least recently used first."""
        folders = [self.root / _safe(organization_id)] if organization_id else [
            p for p in self.root.iterdir() if p.name != ".uploads"]  # fmt: skip
        found = []
        for folder in folders:
            for path in folder.glob("*.tar") if folder.is_dir() else ():
                try:
                    found.append((path, path.stat().st_atime))
                except FileNotFoundError:
                    continue
        return sorted((f for f in found if f[0] not in self._pinned), key=lambda f: f[1])

    def _used(self, organization_id: str) -> int:
        """Bytes of the organization's share taken: its contexts and upload parts here,
        and the bodies coming in (at what they were granted)."""
        used = self._reserved[organization_id]
        folder = self.root / _safe(organization_id)
        paths = list(folder.glob("*.tar")) if folder.is_dir() else []
        for upload in (self.root / ".uploads").iterdir():
            if _owner(upload).get("org") == organization_id:
                paths += upload.glob("part-*")
        for path in paths:
            try:
                used += path.stat().st_size
            except FileNotFoundError:
                continue
        return used

    def _evict(self, organization_id: str, needed: int) -> int:
        """Remove the organization's least recently used contexts (none used within
        :data:`TTL`) until ``needed`` bytes are free, or none is left; bytes freed."""
        freed = 0
        for path, used in self._contexts(organization_id):
            if freed >= needed or used > time.time() - TTL:
                break
            try:
                size = path.stat().st_size
                path.unlink()
            except FileNotFoundError:
                continue
            freed += size
            log.info("build context %s removed to make room (last used %s)", path.name,
                     time.ctime(used))  # fmt: skip
        return freed

    def remove_stale(self, now: float | None = None) -> int:
        """Delete multipart uploads and partial bodies older than the credentials that
        could finish them (:data:`TTL`); returns how many."""
        limit = (now or time.time()) - TTL
        stale = [p for p in (self.root / ".uploads").iterdir() if _changed(p) < limit]
        stale += [p for p in self.root.glob("*/.tmp-*") if _changed(p) < limit]
        for path in stale:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        return len(stale) + self._remove_stale_shared(limit)

    def _remove_stale_shared(self, before: float) -> int:
        if self.shared is None:
            return 0
        try:
            return self.shared.remove_stale(before)
        except CoveError as exc:  # the store is down: next time
            log.warning("removing stale context uploads failed: %s", exc.message)
            return 0

    # -- credentials

    def push_access(self, organization_id: str, key_id: str | None = None) -> PushAccess:
        """Fresh credentials that may upload the organization's contexts only, for
        :data:`TTL` and while the API key ``key_id`` that asked for them works (see
        :meth:`authorize`; None: COVE_API_KEY's, not stored)."""
        access_key = "COVE" + secrets.token_hex(8).upper()
        claims: dict[str, object] = {"org": organization_id, "key": access_key,
                                     "exp": int(time.time()) + TTL}  # fmt: skip
        if key_id is not None:
            claims["kid"] = key_id
        payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode()
        token = f"{payload}.{self._mac('token', payload)}"
        return PushAccess(access_key, self._mac("secret", token), token, organization_id)

    def authorize(
        self, method: str, path: str, query: str, headers: dict[str, str]
    ) -> tuple[str, str]:
        """The organization a signed request acts for, and the payload hash it declares.

        Raises:
            AccessDenied: no valid, unexpired Cove credentials, a bad signature, or the
                API key that asked for the credentials revoked or expired (checked with
                :attr:`key_works`; credentials of a key are refused while it is unset).
        """
        token = headers.get("x-amz-security-token", "")
        payload, _, tag = token.partition(".")
        if not tag or not hmac.compare_digest(tag.encode(), self._mac("token", payload).encode()):
            raise AccessDenied("invalid security token")
        try:
            claims = json.loads(base64.urlsafe_b64decode(payload))
        except ValueError as exc:
            raise AccessDenied("invalid security token") from exc
        if claims["exp"] < time.time():
            raise AccessDenied("the credentials have expired: ask for push access again")
        key_id = claims.get("kid")
        if key_id is not None and (self.key_works is None or not self.key_works(str(key_id))):
            raise AccessDenied("the API key that asked for these credentials was revoked "
                               "or has expired")  # fmt: skip
        try:
            if sigv4.access_key_of(headers.get("authorization")) != claims["key"]:
                raise AccessDenied("the access key does not belong to the security token")
            declared = sigv4.verify(method=method, path=path, query=query, headers=headers,
                                    secret=self._mac("secret", token))  # fmt: skip
        except sigv4.SignatureError as exc:
            raise AccessDenied(str(exc)) from exc
        return str(claims["org"]), declared

    def _mac(self, purpose: str, text: str) -> str:
        return hmac.new(self._key, f"{purpose}|{text}".encode(), hashlib.sha256).hexdigest()

    # -- objects

    def object_path(self, organization_id: str, key: str) -> Path:
        """Where ``key`` (``<org>/<hash>/context.tar``) lives, if it is the organization's.

        Raises:
            AccessDenied: any other key.
        """
        parts = key.split("/")
        if len(parts) != 3 or parts[0] != organization_id or parts[2] != "context.tar":
            raise AccessDenied("only <organization id>/<hash>/context.tar may be written")
        if not _HASH.match(parts[1]):
            raise AccessDenied("the context hash must be 32 hex digits")
        return self.root / _safe(organization_id) / f"{parts[1]}.tar"

    def stat(self, path: Path) -> Stored:
        """Raises NoSuchKey."""
        try:
            st = path.stat()
        except FileNotFoundError as exc:
            raise NoSuchKey(path.name) from exc
        return Stored(st.st_size, f'"{st.st_mtime_ns:x}-{st.st_size:x}"', st.st_mtime)

    def head(self, organization_id: str, key: str) -> Stored:
        """The object ``key`` of the organization, here or in the shared store.

        Raises:
            AccessDenied: not the organization's key. NoSuchKey: not uploaded.
        """
        path = self.object_path(organization_id, key)
        try:
            return self.stat(_used_now(path))
        except NoSuchKey:
            if self.shared is None:
                raise
        size = self.shared.size(_name(path))
        if size is None:
            raise NoSuchKey(path.name)
        return Stored(size, f'"shared-{size:x}"', time.time())

    def _uploaded(self, path: Path) -> bool:
        return path.is_file() or (self.shared is not None
                                  and self.shared.size(_name(path)) is not None)  # fmt: skip

    def context(self, organization_id: str, context_hash: str) -> Path:
        """Where one of the organization's contexts is kept here (fetched from the shared
        store by :meth:`fetched` when it is not yet).

        Raises:
            BadRequest: not uploaded by this organization.
        """
        if not _HASH.match(context_hash):
            raise BadRequest(f"invalid context hash {context_hash!r}")
        path = self.root / _safe(organization_id) / f"{context_hash}.tar"
        if not self._uploaded(path):
            raise BadRequest(f"build context {context_hash} was not uploaded")
        return _used_now(path)

    def fetched(self, organization_id: str, context_hash: str) -> Path:
        """The archive of one of the organization's contexts, here (blocking I/O: a
        download from the shared store, at most :attr:`max_bytes`).

        Raises:
            BadRequest: not uploaded by this organization.
        """
        path = self.context(organization_id, context_hash)
        if path.is_file() or self.shared is None:
            return path
        tmp = self.new_part_file(path)
        try:
            with tmp.open("wb") as out:
                self.shared.download(_name(path), out, self.max_bytes)
            self.commit(tmp, path)
        except TooLarge as exc:
            raise BadRequest(str(exc)) from exc
        finally:
            tmp.unlink(missing_ok=True)
        return path

    def new_part_file(self, path: Path) -> Path:
        """A temporary file next to ``path`` to receive a body."""
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path.parent / f".tmp-{uuid.uuid4().hex}"

    def commit(self, tmp: Path, path: Path) -> Stored:
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
        return self.stat(path)

    def put(self, organization_id: str, key: str, tmp: Path) -> Stored:
        """Make the received body ``tmp`` object ``key`` (shared too: blocking I/O)."""
        path = self.object_path(organization_id, key)
        stored = self.commit(tmp, path)
        if self.shared is not None:
            self.shared.upload(_name(path), path)
        return stored

    # -- multipart uploads (the shared store's own when there is one)

    def start_upload(self, organization_id: str, key: str) -> str:
        path = self.object_path(organization_id, key)
        if self.shared is not None:
            return self.shared.start(_name(path))
        upload_id = uuid.uuid4().hex
        folder = self.root / ".uploads" / upload_id
        folder.mkdir(mode=0o700)
        (folder / "owner").write_text(json.dumps({"org": organization_id, "key": key}))
        return upload_id

    def receive_part(self, organization_id: str, key: str, upload_id: str,
                     number: int) -> tuple[Path, int]:  # fmt: skip
        """Where to receive part ``number`` of an upload, and how many bytes it may have
        (the other parts count). Raises NoSuchKey, AccessDenied."""
        if not 1 <= number <= MAX_PARTS:
            raise AccessDenied(f"part number must be 1 to {MAX_PARTS}")
        if self.shared is not None:
            parts = self._shared_parts(organization_id, key, upload_id)
            other = sum(size for n, (_, size) in parts.items() if n != number)
            return self.new_part_file(self.root / ".uploads" / "part"), self.max_bytes - other
        folder = self.upload_dir(organization_id, key, upload_id)
        part = self.part_path(folder, number)
        return self.new_part_file(part), self.max_bytes - self.uploaded(folder, part)

    def add_part(self, organization_id: str, key: str, upload_id: str, number: int,
                 tmp: Path) -> None:  # fmt: skip
        """Part ``number`` was received in ``tmp`` (blocking I/O)."""
        if self.shared is None:
            tmp.replace(self.part_path(self.upload_dir(organization_id, key, upload_id), number))
            return
        try:
            name = _name(self.object_path(organization_id, key))
            self.shared.put_part(name, _shared_id(upload_id), number, tmp)
        finally:
            tmp.unlink(missing_ok=True)

    def complete_upload(self, organization_id: str, key: str, upload_id: str,
                        numbers: list[int]) -> Stored:  # fmt: skip
        """Join the parts, in the order given, into the object (blocking I/O).

        Raises:
            NoSuchKey: a part is missing. TooLarge: over the limit.
        """
        path = self.object_path(organization_id, key)
        if self.shared is None:
            return self.complete(self.upload_dir(organization_id, key, upload_id), numbers, path)
        parts = self._shared_parts(organization_id, key, upload_id)
        if not numbers or any(n not in parts for n in numbers):
            raise NoSuchKey("a part of the upload is missing")
        if sum(parts[n][1] for n in numbers) > self.max_bytes:
            raise TooLarge(f"a context may be at most {self.max_bytes} bytes")
        self.shared.complete(_name(path), upload_id, [(n, parts[n][0]) for n in numbers])
        return self.head(organization_id, key)

    def abort_upload(self, organization_id: str, key: str, upload_id: str) -> None:
        if self.shared is None:
            self.abort(self.upload_dir(organization_id, key, upload_id))
            return
        path = self.object_path(organization_id, key)
        self.shared.abort(_name(path), _shared_id(upload_id))

    def _shared_parts(self, organization_id: str, key: str, upload_id: str
                      ) -> dict[int, tuple[str, int]]:  # fmt: skip
        """The parts of an upload of the organization's ``key`` (the bucket ties an upload
        to its key, and the key names the organization). Raises NoSuchKey."""
        assert self.shared is not None
        path = self.object_path(organization_id, key)
        return self.shared.parts(_name(path), _shared_id(upload_id))

    def upload_dir(self, organization_id: str, key: str, upload_id: str) -> Path:
        """Raises NoSuchKey (unknown upload), AccessDenied (another's)."""
        folder = self.root / ".uploads" / upload_id
        if not _UPLOAD.match(upload_id) or not (folder / "owner").is_file():
            raise NoSuchKey(upload_id)
        if _owner(folder) != {"org": organization_id, "key": key}:
            raise AccessDenied("the upload belongs to another key")
        return folder

    def part_path(self, folder: Path, number: int) -> Path:
        if not 1 <= number <= MAX_PARTS:
            raise AccessDenied(f"part number must be 1 to {MAX_PARTS}")
        return folder / f"part-{number:05d}"

    def uploaded(self, folder: Path, but: Path) -> int:
        """Bytes of the upload's parts other than ``but`` (a part sent again replaces it)."""
        return sum(p.stat().st_size for p in folder.glob("part-*") if p != but)

    def complete(self, folder: Path, numbers: list[int], path: Path) -> Stored:
        """Join the local upload's parts, in the order given, into the object.

        Raises:
            NoSuchKey: a part is missing. TooLarge: over the limit.
        """
        parts = [self.part_path(folder, n) for n in numbers]
        if not parts or any(not p.is_file() for p in parts):
            raise NoSuchKey("a part of the upload is missing")
        if sum(p.stat().st_size for p in parts) > self.max_bytes:
            raise TooLarge(f"a context may be at most {self.max_bytes} bytes")
        tmp = self.new_part_file(path)
        with tmp.open("wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, 1024 * 1024)
        stored = self.commit(tmp, path)
        shutil.rmtree(folder, ignore_errors=True)
        return stored

    def abort(self, folder: Path) -> None:
        shutil.rmtree(folder, ignore_errors=True)


def _owner(upload: Path) -> dict[str, str]:
    """Whose a local multipart upload is (``{}``: none, or gone)."""
    try:
        owner: dict[str, str] = json.loads((upload / "owner").read_text())
    except (OSError, ValueError):
        return {}
    return owner


def _changed(path: Path) -> float:
    """When ``path`` was last written (infinity: it is gone)."""
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")


def _used_now(path: Path) -> Path:
    """``path``, marked as used now, if it is here: its access time, which
    :meth:`ContextStore.prune` and the evictions go by (its mtime makes its ETag)."""
    try:
        os.utime(path, ns=(time.time_ns(), path.stat().st_mtime_ns))
    except FileNotFoundError:
        pass
    return path


def _name(path: Path) -> str:
    """A context's name in the shared store: ``<organization id>/<hash>.tar``."""
    return f"{path.parent.name}/{path.name}"


def _shared_id(upload_id: str) -> str:
    """Raises NoSuchKey: no id the bucket could have given."""
    if not _SHARED_UPLOAD.match(upload_id):
        raise NoSuchKey(upload_id)
    return upload_id


def _safe(organization_id: str) -> str:
    """The organization's folder name (ids are UUIDs; anything else is refused)."""
    if not organization_id or not all(c.isalnum() or c in "-_" for c in organization_id):
        raise AccessDenied("invalid organization")
    return organization_id
