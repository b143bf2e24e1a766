"""Copying a sandbox's writable layer for a fork.

The layer is one sparse ext4 image, so the copy is ``cp --sparse=always``
(or a reflink where the file system has them). A running or paused source is
made consistent first: its tasks are frozen (if they were not already) and
its file system is frozen with FIFREEZE, which flushes everything to the
image; both are thawed as soon as the copy is done.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cove.errors import RuntimeBackendError
from cove.runner.host import freezer, mounts
from cove.runner.host.proc import run
from cove.runner.layout import SandboxPaths


def copy_layer(group: str, src: SandboxPaths, dst: SandboxPaths, *, alive: bool) -> None:
    """Copy ``src``'s image to ``dst`` (a new directory); ``dst`` is removed on failure.

    Args:
        group: The source sandbox's cgroup group (for its freezer).
        src: Paths of the source.
        dst: Paths of the new sandbox; its directory must not exist yet.
        alive: Whether the source's container runs (running or paused).
    """
    if not src.image.is_file():
        raise RuntimeBackendError(f"sandbox {src.root.name} has no writable layer to fork")
    try:
        dst.root.mkdir(parents=True)
    except OSError as exc:
        raise RuntimeBackendError(f"cannot create {dst.root}: {exc}") from exc
    try:
        with _quiesced(group, src, alive=alive):
            _copy(src.image, dst.image)
    except BaseException:
        shutil.rmtree(dst.root, ignore_errors=True)
        raise


@contextmanager
def _quiesced(group: str, src: SandboxPaths, *, alive: bool) -> Iterator[None]:
    mounted = mounts.is_mounted(src.disk)
    froze = alive and not freezer.is_frozen(group)
    if froze:
        freezer.freeze(group)
    try:
        if mounted:
            run(["fsfreeze", "--freeze", str(src.disk)], timeout=60)
        try:
            yield
        finally:
            if mounted:
                run(["fsfreeze", "--unfreeze", str(src.disk)], timeout=60)
    finally:
        if froze:
            freezer.thaw(group)


def _copy(source: Path, target: Path) -> None:
    argv = ["cp", "--sparse=always", "--reflink=auto", str(source), str(target)]
    run(argv, timeout=1800)
