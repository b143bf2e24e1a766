"""Where archives of sandboxes are kept: a local directory or an S3 bucket.

An archive is written as a stream (tar | zstd piped straight into the store)
and read back as a stream. ``put`` commits the archive only after the whole
stream was read *and* the caller's ``check`` passed (tar and zstd both exited
0), so a failed or interrupted archive never looks complete: the local store
renames a temp file, the S3 store completes a multipart upload only then.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Protocol

from cove.core.config import Settings
from cove.errors import RuntimeBackendError
from cove.hostfiles import FILE_MODE, private_dir

SUFFIX = ".tar.zst"
CHUNK = 8 * 1024 * 1024  # S3 multipart parts must be at least 5 MiB (but the last)


class ArchiveStore(Protocol):
    def put(self, key: str, stream: IO[bytes], check: Callable[[], None]) -> int:
        """Store ``stream`` under ``key`` once ``check()`` passed; returns the size.

        Raises:
            RuntimeBackendError: writing failed or ``check`` raised; nothing is stored.
        """

    def get(self, key: str) -> Any:
        """A context manager giving a readable binary stream of ``key``.

        Raises:
            RuntimeBackendError: it does not exist or cannot be read.
        """

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int | None:
        """The stored archive's size in bytes, None when there is none."""

    def delete(self, key: str) -> None:
        """Remove ``key`` (and any half-written copy); no error when absent."""

    def remove_partial(self, key: str) -> None:
        """Remove half-written copies of ``key`` that an interrupted ``put`` left (a
        killed server); call it only when no ``put`` of ``key`` runs."""

    def keys(self) -> set[str]: ...


class LocalArchiveStore:
    """Archives as ``<dir>/<key>.tar.zst`` files."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def path(self, key: str) -> Path:
        return self.dir / f"{key}{SUFFIX}"

    def put(self, key: str, stream: IO[bytes], check: Callable[[], None]) -> int:
        dest = self.path(key)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        try:
            private_dir(self.dir)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(stream, out, CHUNK)
                out.flush()
                check()
                os.fsync(out.fileno())
            os.rename(tmp, dest)
            _fsync_dir(self.dir)
            return dest.stat().st_size
        except OSError as exc:
            raise RuntimeBackendError(f"cannot write archive {dest}: {exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)

    @contextmanager
    def get(self, key: str) -> Iterator[IO[bytes]]:
        try:
            f = open(self.path(key), "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise RuntimeBackendError(f"archive of {key} is missing: {exc.strerror}") from exc
        with f:
            yield f

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def size(self, key: str) -> int | None:
        try:
            return self.path(key).stat().st_size
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RuntimeBackendError(f"cannot stat {self.path(key)}: {exc}") from exc

    def delete(self, key: str) -> None:
        target = self.path(key)
        try:
            target.unlink(missing_ok=True)
        except OSError as exc:
            raise RuntimeBackendError(f"cannot remove {target}: {exc}") from exc
        self.remove_partial(key)

    def remove_partial(self, key: str) -> None:
        """Temp files ``.<key>.tar.zst.<pid>.tmp`` (of any pid: keys are sandbox ids,
        which only this server archives)."""
        target = self.path(key)
        try:
            for stale in self.dir.glob(f".{target.name}.*.tmp"):
                stale.unlink(missing_ok=True)
        except OSError as exc:
            raise RuntimeBackendError(f"cannot remove {target}: {exc}") from exc

    def keys(self) -> set[str]:
        if not self.dir.is_dir():
            return set()
        return {p.name[: -len(SUFFIX)] for p in self.dir.glob(f"*{SUFFIX}")}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def build_archive_store(settings: Settings) -> ArchiveStore:
    """The store ``settings`` ask for: S3 when ``archive_s3_bucket`` is set, else local."""
    if settings.archive_s3_bucket:
        from cove.runner.storage.s3_archive import S3ArchiveStore

        return S3ArchiveStore(
            settings.archive_s3_bucket,
            prefix=settings.archive_s3_prefix,
            endpoint_url=settings.archive_s3_endpoint,
            region=settings.archive_s3_region,
        )
    assert settings.archive_dir is not None
    return LocalArchiveStore(settings.archive_dir)
