"""Removing old builds of a versioned snapshot (the default one) that nothing uses.

A build ``<snapshot_dir>/<name>/<dir>`` is kept while anything on the host may use it:

- ``current`` points to it;
- a sandbox records it as its lower layer (stopped and archived ones too), in any data
  dir that uses this snapshot dir: the data dirs registered in ``<name>/.data-dirs/``
  (each server registers its own when it checks the snapshot at start), those holding
  a sandbox id range in the host-wide registry (``/var/lib/cove-ids``), and our own;
- a mount of the host is made from it (a running sandbox's idmapped lower layer, even
  one of a data dir nobody registered);
- a create is choosing its lower layer at this moment (it holds ``.gc.lock`` shared
  from reading ``current`` until its metadata names the build, see :func:`pinned`).

A sandbox whose metadata cannot be read keeps every build: the collector never guesses.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cove.errors import RuntimeBackendError
from cove.runner.host import idrange
from cove.runner.layout import SandboxPaths, sandboxes_dir

log = logging.getLogger(__name__)
REGISTERED = ".data-dirs"
LOCK = ".gc.lock"


@contextmanager
def pinned(base: Path) -> Iterator[None]:
    """Hold off the collector of snapshot ``base`` (a shared lock) while a sandbox's
    lower layer is chosen and recorded."""
    with _lock(base, fcntl.LOCK_SH):
        yield


def register(base: Path, data_dir: Path) -> None:
    """Record that ``data_dir``'s sandboxes may use builds of snapshot ``base``."""
    where = base / REGISTERED
    where.mkdir(mode=0o700, exist_ok=True)
    name = hashlib.sha256(str(data_dir).encode()).hexdigest()[:16]
    if (where / name).is_file():
        return
    tmp = where / f".{name}.{os.getpid()}"
    tmp.write_text(f"{data_dir}\n")
    os.replace(tmp, where / name)


def collect(base: Path, data_dir: Path) -> list[str]:
    """Remove the builds of snapshot ``base`` that nothing uses; returns their names.

    Raises:
        RuntimeBackendError: a sandbox's metadata is unreadable (nothing is removed).
    """
    with _lock(base, fcntl.LOCK_EX):
        for leftover in base.glob(".build-gc-*"):  # of a collection cut short
            shutil.rmtree(leftover)
        keep = _current(base)
        builds = [d for d in _builds(base) if d.name != keep]
        if not builds:
            return []
        used = _used_by_sandboxes(base, data_dir) | _used_by_mounts(builds)
        removed = []
        for build in builds:
            real = os.path.realpath(build)  # (as the sandboxes' lower layers are)
            if any(_within(path, real) or _within(path, build) for path in used):
                continue
            trash = base / f".build-gc-{build.name}-{os.getpid()}"
            build.rename(trash)  # no longer looks finished, even if removal is cut short
            shutil.rmtree(trash)
            removed.append(build.name)
        return removed


@contextmanager
def _lock(base: Path, mode: int) -> Iterator[None]:
    fd = os.open(base / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, mode)
        yield
    finally:
        os.close(fd)


def _current(base: Path) -> str | None:
    try:
        return os.readlink(base / "current").rstrip("/")
    except OSError:
        return None


def _builds(base: Path) -> list[Path]:
    return [
        d for d in base.iterdir()
        if not d.name.startswith(".") and not d.is_symlink() and d.is_dir()
        and (d / "recipe.json").is_file()
    ]  # fmt: skip


def _within(path: str, build: Path | str) -> bool:
    return path == str(build) or path.startswith(f"{build}/")


def _data_dirs(base: Path, data_dir: Path) -> set[Path]:
    found = {data_dir}
    for entry in (base / REGISTERED).glob("[!.]*"):
        try:
            registered = Path(entry.read_text().strip())
            if not registered.exists():
                entry.unlink()  # that data dir is gone
                continue
        except OSError:
            continue
        found.add(registered)
    try:
        claims = os.listdir(idrange.REGISTRY)
    except FileNotFoundError:
        claims = []
    for claim in claims:
        try:
            found.add(Path((idrange.REGISTRY / claim).read_text().splitlines()[0]))
        except (OSError, IndexError):
            continue
    return found


def _used_by_sandboxes(base: Path, data_dir: Path) -> set[str]:
    """Lower layers (resolved) recorded by every sandbox of every known data dir."""
    lowers = set()
    for data in _data_dirs(base, data_dir):
        try:
            names = os.listdir(sandboxes_dir(data))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for name in names:
            try:
                paths = SandboxPaths.of(data, name)
            except RuntimeBackendError:
                continue  # not a sandbox's directory
            if not paths.metadata.exists():
                continue  # being created (under the pin) or removed: it names no lower
            meta = paths.read_metadata()  # RuntimeBackendError: keep everything
            lowers.add(os.path.realpath(meta.lower))
    return lowers


def _used_by_mounts(builds: list[Path]) -> set[str]:
    """Host paths of ``builds`` some mount of this mount namespace is made from."""
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        rows = [line.split(" ") for line in f]
    used = set()
    for build in builds:
        inside = _path_in_filesystem(build, rows)
        if inside is None or any(r[2] == inside[0] and _within(r[3], inside[1]) for r in rows):
            used.add(str(build))  # (a build we cannot place is kept too)
    return used


def _path_in_filesystem(path: Path, rows: list[list[str]]) -> tuple[str, Path] | None:
    """``(major:minor, path inside that file system)`` of ``path``, in mountinfo's
    escaped form (fields 3 and 4 of its rows)."""
    st = path.stat()
    dev = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    real = _escape(os.path.realpath(path))
    best: tuple[str, str] | None = None
    for r in rows:
        point = r[4]
        if r[2] == dev and (real == point or real.startswith(point.rstrip("/") + "/")):
            if best is None or len(point) > len(best[0]):
                best = (point, r[3])
    if best is None:
        return None
    return dev, Path(os.path.normpath(os.path.join(best[1], os.path.relpath(real, best[0]))))


def _escape(path: str) -> str:
    """``path`` as /proc/self/mountinfo writes it."""
    for char, code in (("\\", "\\134"), (" ", "\\040"), ("\t", "\\011"), ("\n", "\\012")):
        path = path.replace(char, code)
    return path


def safe_collect(base: Path, data_dir: Path) -> list[str]:
    """:func:`collect`, logging instead of raising (a failed collection removes nothing
    more and is tried again at the next check)."""
    try:
        return collect(base, data_dir)
    except (OSError, RuntimeBackendError) as exc:
        log.warning("old builds of %s were kept: %s", base.name, exc)
        return []
