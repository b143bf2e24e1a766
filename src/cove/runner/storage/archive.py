"""Packing a sandbox's writable layer into a zstd-compressed tar, and back.

The layer is an overlayfs upper directory: deletions of lower files are
whiteouts (0:0 character devices) and opaque directories carry the
``trusted.overlay.opaque`` xattr, so tar runs as root with every xattr and
numeric owners, and restores device nodes.
"""

from __future__ import annotations

import subprocess
import tempfile
import threading
from pathlib import Path
from typing import IO, Any

from cove.errors import RuntimeBackendError
from cove.runner.host import disk, mounts
from cove.runner.layout import SandboxPaths
from cove.runner.storage.archive_store import CHUNK, ArchiveStore

TAR_FLAGS = ("--xattrs", "--xattrs-include=*", "--numeric-owner")
RESTORING = "disk.img.restore"  # a restore's fresh image, until it is complete


def pipe(first: list[str], second: list[str] | None, out: IO[bytes] | int) -> None:
    """Run ``first | second > out`` (or ``first > out``) and check both exit codes."""
    stages = [first, second] if second else [first]
    with tempfile.TemporaryFile() as err0, tempfile.TemporaryFile() as err1:
        try:
            a = subprocess.Popen(
                first,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if second else out,
                stderr=err0,
            )
            procs = [a]
            if second:
                assert a.stdout is not None
                procs.append(subprocess.Popen(second, stdin=a.stdout, stdout=out, stderr=err1))
                a.stdout.close()
            codes = [p.wait() for p in reversed(procs)][::-1]
        except OSError as exc:
            raise RuntimeBackendError(f"{first[0]} failed: {exc}") from exc
        for argv, code, err in reversed(list(zip(stages, codes, (err0, err1), strict=False))):
            if code != 0:
                err.seek(0)
                tail = err.read().decode(errors="replace").strip().splitlines()[-1:] or [""]
                raise RuntimeBackendError(f"{argv[0]} exited {code}: {tail[0]}")


def archive_into(paths: SandboxPaths, store: ArchiveStore, key: str) -> int:
    """Stream the upper dir of a stopped sandbox's image into ``store`` as ``key``
    (tar | zstd, nothing on local disk), then delete the image.

    Returns:
        The archive's size in bytes.
    """
    disk.mount(paths.image, paths.disk)
    try:
        paths.upper.mkdir(exist_ok=True)
        tar = ["tar", "--create", "--file=-", "--sparse", f"--directory={paths.upper}",
               *TAR_FLAGS, "."]  # fmt: skip
        with Pipeline([tar, ["zstd", "-1", "-T0", "-q", "-c"]], stdin=None) as pipe:
            assert pipe.stdout is not None
            size = store.put(key, pipe.stdout, pipe.check)
    except OSError as exc:
        raise RuntimeBackendError(f"cannot archive {paths.root.name}: {exc}") from exc
    finally:
        mounts.unmount(paths.disk)
    try:
        paths.image.unlink()
    except OSError as exc:
        raise RuntimeBackendError(f"cannot remove {paths.image}: {exc}") from exc
    return size


def restore_from(store: ArchiveStore, key: str, paths: SandboxPaths, disk_gib: int) -> None:
    """Stream ``key`` from ``store`` into a fresh image of ``disk_gib`` GiB.

    zstd checks every frame's checksum as it decompresses, and the fresh image
    becomes disk.img only when zstd and tar both succeeded: a corrupt or
    truncated archive changes nothing (and is kept in the store).
    """
    fresh = paths.root / RESTORING
    tar = ["tar", "--extract", "--file=-", f"--directory={paths.upper}", "--same-permissions",
           "--same-owner", *TAR_FLAGS]  # fmt: skip
    try:
        disk.create_image(fresh, disk_gib)
        disk.mount(fresh, paths.disk)
        paths.upper.mkdir()
        with (
            store.get(key) as source,
            Pipeline(
                [["zstd", "-d", "-q", "-c"], tar], stdin=source, stdout=subprocess.DEVNULL
            ) as pipe,
        ):
            pipe.check()
        paths.work.mkdir(exist_ok=True)
        mounts.unmount(paths.disk)
        fresh.rename(paths.image)
    except OSError as exc:
        raise RuntimeBackendError(f"cannot restore {paths.root.name}: {exc}") from exc
    finally:
        mounts.unmount(paths.disk)
        fresh.unlink(missing_ok=True)


def pack_dir(directory: Path, store: ArchiveStore, key: str) -> int:
    """Stream ``directory``'s contents into ``store`` as ``key`` (tar | zstd); its size.
    Holes go as such (a sandbox's file may claim 16 TiB of them): neither read as zeros
    here nor written out by :func:`unpack_dir`."""
    tar = ["tar", "--create", "--file=-", "--sparse", f"--directory={directory}", *TAR_FLAGS,
           "."]  # fmt: skip
    try:
        with Pipeline([tar, ["zstd", "-1", "-T0", "-q", "-c"]], stdin=None) as pipe:
            assert pipe.stdout is not None
            return store.put(key, pipe.stdout, pipe.check)
    except OSError as exc:
        raise RuntimeBackendError(f"cannot archive {directory}: {exc}") from exc


def unpack_dir(store: ArchiveStore, key: str, directory: Path) -> None:
    """Stream ``key`` from ``store`` into the (empty) ``directory``; checked as it goes
    (zstd's frame checksums, tar's and zstd's exit codes)."""
    tar = ["tar", "--extract", "--file=-", f"--directory={directory}", "--same-permissions",
           "--same-owner", *TAR_FLAGS]  # fmt: skip
    try:
        with (
            store.get(key) as source,
            Pipeline([["zstd", "-d", "-q", "-c"], tar], stdin=source,
                      stdout=subprocess.DEVNULL) as pipe,
        ):  # fmt: skip
            pipe.check()
    except OSError as exc:
        raise RuntimeBackendError(f"cannot restore {directory}: {exc}") from exc


def remove_partial_restore(paths: SandboxPaths) -> None:
    """Remove the fresh image an interrupted :func:`restore_from` left (the archive it
    was restored from is still in the store). Its mount, if any, goes with the
    sandbox's other mounts."""
    (paths.root / RESTORING).unlink(missing_ok=True)


class Pipeline:
    """``a | b`` with checked exit codes; ``stdin`` may be any readable binary stream
    (a file is handed over as is, anything else is pumped by a thread)."""

    def __init__(
        self, stages: list[list[str]], *, stdin: IO[bytes] | None, stdout: int | None = None
    ) -> None:
        self.stages = stages
        self._stdin = stdin
        self._stdout = subprocess.PIPE if stdout is None else stdout
        self._errs = [tempfile.TemporaryFile() for _ in stages]
        self.procs: list[subprocess.Popen[bytes]] = []
        self._pump: threading.Thread | None = None
        self.stdout: IO[bytes] | None = None

    def __enter__(self) -> Pipeline:
        try:
            first_in, feed = _stdin_of(self._stdin)
            a = subprocess.Popen(self.stages[0], stdin=first_in, stdout=subprocess.PIPE,
                                 stderr=self._errs[0])  # fmt: skip
            b = subprocess.Popen(self.stages[1], stdin=a.stdout, stdout=self._stdout,
                                 stderr=self._errs[1])  # fmt: skip
        except OSError as exc:
            self._close()
            raise RuntimeBackendError(f"{self.stages[0][0]} failed: {exc}") from exc
        assert a.stdout is not None
        a.stdout.close()
        self.procs = [a, b]
        self.stdout = b.stdout
        if feed is not None:
            assert a.stdin is not None
            self._pump = threading.Thread(target=_pump, args=(feed, a.stdin), daemon=True)
            self._pump.start()
        return self

    def check(self) -> None:
        """Wait for both stages; raise with the first failure's last stderr line."""
        codes = [p.wait() for p in reversed(self.procs)][::-1]
        if self._pump is not None:
            self._pump.join()
        for argv, code, err in zip(self.stages, codes, self._errs, strict=True):
            if code != 0:
                err.seek(0)
                tail = err.read().decode(errors="replace").strip().splitlines()[-1:] or [""]
                raise RuntimeBackendError(f"{argv[0]} exited {code}: {tail[0]}")

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        if self._pump is not None:
            self._pump.join(timeout=5)
        self._close()

    def _close(self) -> None:
        if self.stdout is not None:
            self.stdout.close()
        for err in self._errs:
            err.close()


def _stdin_of(source: IO[bytes] | None) -> tuple[Any, IO[bytes] | None]:
    if source is None:
        return subprocess.DEVNULL, None
    try:
        source.fileno()
        return source, None
    except (OSError, AttributeError, ValueError):
        return subprocess.PIPE, source


def _pump(source: IO[bytes], sink: IO[bytes]) -> None:
    try:
        while chunk := source.read(CHUNK):
            sink.write(chunk)
    except (OSError, ValueError):
        pass  # the reader died; check() reports why
    finally:
        try:
            sink.close()
        except OSError:
            pass
