"""Blank disk images made ahead, so that a create takes one instead of running mkfs.

``<data_dir>/blank-disks/<gib>g-<uuid>.img``: sparse ext4 images exactly as
:func:`cove.runner.host.disk.create_image` makes them (each by its own mkfs, so
each file system has a UUID of its own), never mounted nor handed to anyone
before a sandbox takes one. Taking is a rename into the sandbox's directory
(atomic: two creates never get the same image). After each take, a worker
thread makes the size taken back up to ``KEEP`` images, a moment later, so that
the mkfs does not compete with the start that follows the take. Sizes nobody
asked for in this run are not made; what is left from an earlier run is used.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cove.errors import RuntimeBackendError
from cove.runner.host import disk

KEEP = 2  # blank images kept per size (about 2 MiB of the host's disk each)
REFILL_DELAY = 0.25  # seconds between a take and the mkfs that replaces it
_TMP = ".making-"
log = logging.getLogger(__name__)


class BlankDisks:
    """The blank images of one data dir."""

    def __init__(self, data_dir: Path) -> None:
        self.directory = data_dir / "blank-disks"
        self._data_dir = data_dir
        self._guard = threading.Lock()
        self._filling: set[int] = set()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cove-blank-disk")
        self._swept = False

    def take(self, image: Path, size_gib: int) -> bool:
        """Move a blank image of ``size_gib`` GiB to ``image`` (replacing it); False
        when none is ready (the caller makes one). Either way, that size is made back
        up to KEEP images in the background."""
        taken = False
        for candidate in self._ready(size_gib):
            try:
                os.rename(candidate, image)
            except FileNotFoundError:
                continue  # taken by another create meanwhile
            except OSError as exc:  # (another file system: the caller makes one)
                log.warning("cannot take blank disk %s: %s", candidate, exc)
                break
            taken = True
            break
        self._refill(size_gib)
        return taken

    def _ready(self, size_gib: int) -> list[Path]:
        try:
            return sorted(self.directory.glob(f"{size_gib}g-*.img"))
        except OSError:
            return []

    def _refill(self, size_gib: int) -> None:
        with self._guard:
            if size_gib in self._filling:
                return
            self._filling.add(size_gib)
        try:
            self._worker.submit(self._fill, size_gib)
        except RuntimeError:  # shut down (interpreter exit)
            with self._guard:
                self._filling.discard(size_gib)

    def _fill(self, size_gib: int) -> None:
        time.sleep(REFILL_DELAY)
        try:
            self._prepare_directory()
            while len(self._ready(size_gib)) < KEEP:
                self._make(size_gib)
        except (RuntimeBackendError, OSError) as exc:
            log.warning("cannot make a blank %d GiB disk ahead: %s", size_gib, exc)
        finally:
            with self._guard:
                self._filling.discard(size_gib)

    def _prepare_directory(self) -> None:
        """Make the directory (not the data dir: a data dir removed meanwhile stays
        removed) and, once a run, remove what an interrupted mkfs left."""
        if not self._data_dir.is_dir():
            raise RuntimeBackendError(f"{self._data_dir} is gone")
        self.directory.mkdir(mode=0o700, exist_ok=True)
        if not self._swept:
            for left in self.directory.glob(f"{_TMP}*"):
                left.unlink(missing_ok=True)
            self._swept = True

    def _make(self, size_gib: int) -> None:
        name = uuid.uuid4().hex
        scratch = self.directory / f"{_TMP}{name}"
        try:
            disk.create_image(scratch, size_gib)
            os.rename(scratch, self.directory / f"{size_gib}g-{name}.img")
        finally:
            scratch.unlink(missing_ok=True)
