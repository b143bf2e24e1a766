"""Snapshots shared between runners through the object store the archives are in.

With an S3 archive store (``COVE_ARCHIVE_S3_BUCKET``), a runner that makes a snapshot
(a capture, a Dockerfile build, an import, a copy) uploads it, and a runner asked for
a sandbox of a snapshot it lacks downloads it first: a team that adds hosts never
rebuilds its snapshots. Objects, under ``<COVE_ARCHIVE_S3_PREFIX>snapshots/``:

    <ref>.tar.zst   the snapshot's directory (its rootfs and image config): tar | zstd
    <ref>.sha256    {"sha256": digest of <ref>.tar.zst, "size": its bytes}, written last

Both ways are streams (tar | zstd into a multipart upload; the download through
zstd into an extraction), never a whole image in memory; a file's holes travel as
its map of holes (a sandbox's file, captured, may claim 16 TiB of them). A download
is checked member by member as it is unpacked (:mod:`cove.runner.storage.safe_tar`:
others write to that store too), into a work directory renamed into place only once
the digest and size matched and it holds a snapshot's directory and nothing else;
concurrent boots of one snapshot on a runner fetch it once.
Images pulled from a registry are not shared: each runner pulls them itself.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import stat
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from cove.core.config import Settings
from cove.errors import RuntimeBackendError
from cove.runner.storage import safe_tar
from cove.runner.storage.archive import TAR_FLAGS, Pipeline
from cove.runner.storage.archive_store import CHUNK, ArchiveStore
from cove.runner.storage.capture import building
from cove.runner.storage.unpack import CONFIG_FILE, MAX_CONFIG

log = logging.getLogger(__name__)
DATA, DIGEST = ".tar.zst", ".sha256"
PREFIX = "snapshots/"
MAX_RECORD = 4096
_HEX = re.compile(r"^[0-9a-f]{64}$")


class SnapshotShare:
    """The snapshots of ``base`` (a runner's snapshot dir) in the shared ``store``.

    Args:
        limit: the most bytes a fetched snapshot may unpack to.
    """

    def __init__(self, store: ArchiveStore, base: Path, limit: int) -> None:
        self.store, self.base, self.limit = store, base, limit
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    @classmethod
    def of(cls, settings: Settings) -> SnapshotShare | None:
        """The share ``settings`` configure: None without an S3 archive store."""
        if not settings.archive_s3_bucket or settings.snapshot_dir is None:
            return None
        from cove.runner.storage.s3_archive import S3ArchiveStore

        store = S3ArchiveStore(
            settings.archive_s3_bucket, prefix=settings.archive_s3_prefix + PREFIX,
            endpoint_url=settings.archive_s3_endpoint, region=settings.archive_s3_region,
            suffix="",
        )  # fmt: skip
        limit = settings.max_image_mb * 2**20 + settings.max_disk * 2**30
        return cls(store, settings.snapshot_dir, limit)

    @contextmanager
    def held(self, ref: str) -> Iterator[None]:
        """Snapshot ``ref`` is neither fetched nor removed by another thread meanwhile."""
        with self._guard:
            lock = self._locks.setdefault(ref, threading.Lock())
        with lock:
            yield

    def push(self, ref: str) -> int:
        """Upload snapshot ``ref`` (complete in ``base``); returns the upload's size.

        Raises:
            RuntimeBackendError: tar, zstd or the store failed; nothing is left stored.
        """
        tar = ["tar", "--create", "--file=-", "--format=pax", "--sparse",
               f"--directory={self.base / ref}", *TAR_FLAGS, "."]  # fmt: skip
        with Pipeline([tar, ["zstd", "-3", "-T0", "-q", "-c"]], stdin=None) as pipe:
            assert pipe.stdout is not None
            hashing = _Hashing(pipe.stdout)
            size = self.store.put(ref + DATA, hashing, pipe.check)  # type: ignore[arg-type]
        record = json.dumps({"sha256": hashing.sha.hexdigest(), "size": size}).encode()
        try:
            self.store.put(ref + DIGEST, io.BytesIO(record), lambda: None)
        except BaseException:
            self.store.delete(ref + DATA)
            raise
        log.info("snapshot %s shared (%d bytes)", ref, size)
        return size

    def ensure(self, ref: str, present: Callable[[], bool]) -> None:
        """Fetch snapshot ``ref`` unless ``present()`` (checked again once no other
        fetch of it runs: concurrent callers fetch it once).

        Raises:
            RuntimeBackendError: it is not in the store, or the download was refused
                (digest, size, an unsafe member); nothing is left in ``base``.
        """
        with self.held(ref):
            if present():
                return
            expected = self._record(ref)
            with building(self.base, ref) as rootfs, self.store.get(ref + DATA) as body:
                _unpack(body, rootfs.parent, expected, self.limit)
                _check_layout(rootfs.parent)
            log.info("snapshot %s fetched from the shared store", ref)

    def delete(self, ref: str) -> None:
        """Remove snapshot ``ref`` from the store (no error when it is not there)."""
        self.store.delete(ref + DIGEST)
        self.store.delete(ref + DATA)

    def _record(self, ref: str) -> tuple[str, int]:
        if not self.store.exists(ref + DIGEST):
            raise RuntimeBackendError(
                f"snapshot {ref!r} is neither on this runner nor in the shared snapshot store")
        with self.store.get(ref + DIGEST) as f:
            raw = f.read(MAX_RECORD + 1)
        try:
            record = json.loads(raw[:MAX_RECORD])
            digest, size = record["sha256"], record["size"]
        except (ValueError, KeyError, TypeError):
            raise RuntimeBackendError(f"snapshot {ref!r}: its record in the store is not valid"
                                      ) from None  # fmt: skip
        if not isinstance(digest, str) or not _HEX.match(digest) or not isinstance(size, int):
            raise RuntimeBackendError(f"snapshot {ref!r}: its record in the store is not valid")
        return digest, size


def _check_layout(snapshot: Path) -> None:
    """A fetched snapshot's directory holds its ``rootfs`` (a directory) and its image
    config (a regular file of at most ``MAX_CONFIG`` bytes), nothing else: the host
    reads them by path (a start reads the config, a capture copies it, a ``current``
    names the rootfs), so a link among them (safe_tar lets absolute ones be: they
    point into the sandbox's root) would have it read any host file or directory.

    Raises:
        UnsafeTar: something else is there.
    """
    for entry in os.scandir(snapshot):
        st = entry.stat(follow_symlinks=False)
        if entry.name == "rootfs" and stat.S_ISDIR(st.st_mode):
            continue
        if entry.name == CONFIG_FILE and stat.S_ISREG(st.st_mode) and st.st_size <= MAX_CONFIG:
            continue
        raise safe_tar.UnsafeTar(f"{entry.name!r} in the snapshot: not a part of a snapshot")


class _Hashing:
    """A readable stream that hashes what is read through it."""

    def __init__(self, inner: IO[bytes]) -> None:
        self.inner, self.sha = inner, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.inner.read(size)
        self.sha.update(data)
        return data


def _unpack(body: IO[bytes], work: Path, expected: tuple[str, int], limit: int) -> None:
    """Stream ``body`` (tar | zstd) through ``zstd -d`` into :func:`safe_tar.extract`
    in ``work``, hashing it on the way; it must match ``expected`` (digest, size).

    Raises:
        RuntimeBackendError: it did not (or zstd or the extraction failed).
    """
    digest, size = expected
    try:
        zstd = subprocess.Popen(["zstd", "-d", "-q", "-c"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
    except OSError as exc:
        raise RuntimeBackendError(f"zstd failed: {exc}") from exc
    assert zstd.stdin is not None and zstd.stdout is not None
    feed = _Feed(body, zstd.stdin, size)
    pump = threading.Thread(target=feed.run, name="snapshot fetch", daemon=True)
    pump.start()
    mismatch = RuntimeBackendError("the snapshot in the shared store does not match its digest")
    try:
        safe_tar.extract(zstd.stdout, work, limit)
        while zstd.stdout.read(CHUNK):  # the end of the stream (bounded by ``size``)
            pass
        pump.join()
        code = zstd.wait()
    except RuntimeBackendError:
        if feed.size > size:  # cut short: longer than its record says
            raise mismatch from None
        raise
    finally:
        if zstd.poll() is None:
            zstd.kill()
        zstd.wait()
        zstd.stdout.close()
        pump.join(timeout=10)
    if feed.size != size or feed.sha.hexdigest() != digest:
        raise mismatch
    if code != 0:
        raise RuntimeBackendError(f"zstd exited {code} on the snapshot from the shared store")


class _Feed:
    """Copies the download into zstd, hashing and counting it; stops past ``most``
    bytes (the digest check then fails)."""

    def __init__(self, source: IO[bytes], sink: IO[bytes], most: int) -> None:
        self.source, self.sink, self.most = source, sink, most
        self.sha, self.size = hashlib.sha256(), 0

    def run(self) -> None:
        try:
            while chunk := self.source.read(CHUNK):
                self.sha.update(chunk)
                self.size += len(chunk)
                if self.size > self.most:
                    break
                self.sink.write(chunk)
        except (OSError, ValueError):
            pass  # zstd died (a refused member killed it) or the download broke
        except Exception as exc:  # noqa: BLE001 - botocore's read errors: the digest fails
            log.warning("snapshot download failed: %s", exc)
        finally:
            try:
                self.sink.close()
            except OSError:
                pass
