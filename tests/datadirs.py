"""Data dirs for tests that run real sandboxes."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

PARENT = Path("/var/tmp")


def searchable_data_dir(prefix: str) -> Path:
    """A fresh directory that other users may search (not list), removed at exit.

    The gVisor tier's file server runs as a sandbox's own uid and must reach the
    sandbox's files; pytest's base temporary directory is 0700 (and pytest makes
    it so again at every start, also in other sessions on the same host).
    """
    data = Path(tempfile.mkdtemp(prefix=prefix, dir=PARENT))
    data.chmod(0o711)
    atexit.register(shutil.rmtree, data, ignore_errors=True)
    return data
