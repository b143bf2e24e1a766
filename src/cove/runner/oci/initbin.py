"""Cove's two static helper binaries, compiled from C on first use, and the
directory the sandbox's ``/dev/.cove`` is.

``cove-init`` (init.c) is process 1 of every sandbox (and the hybrid-cgroup
wrapper of crun); ``cove-nsexec`` (nsexec.c) makes a sandbox's namespaces and
overlay on the host. Each is compiled into ``<data_dir>/lib/<name>-<sha>``, so a
changed source gives a new file and running sandboxes keep theirs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from pathlib import Path

from cove.errors import RuntimeBackendError
from cove.runner.host.proc import run
from cove.runner.oci import spec

HERE = Path(__file__).parent
SOURCE = HERE / "init.c"
NSEXEC_SOURCE = HERE / "nsexec.c"
_lock = threading.Lock()


def ensure_init_binary(data_dir: Path) -> Path:
    """The compiled cove-init (see :func:`ensure_binary`)."""
    return ensure_binary(data_dir, SOURCE, "cove-init")


def ensure_nsexec_binary(data_dir: Path) -> Path:
    """The compiled cove-nsexec (see :func:`ensure_binary`)."""
    return ensure_binary(data_dir, NSEXEC_SOURCE, "cove-nsexec")


def ensure_cove_dir(data_dir: Path) -> Path:
    """``<data_dir>/lib/cove-dir-<sha>``: empty mount points (``spec.COVE_ENTRIES``),
    root's, which every sandbox binds read-only at ``spec.COVE_DIR``.

    Raises:
        RuntimeBackendError: it cannot be made.
    """
    layout = sorted(spec.COVE_ENTRIES.items())
    digest = hashlib.sha256(repr(layout).encode()).hexdigest()[:16]
    target = data_dir / "lib" / f"cove-dir-{digest}"
    with _lock:
        if target.is_dir():
            return target
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(mode=0o755, parents=True)
            for name, is_dir in layout:  # (sorted: a directory before what is in it)
                if is_dir:
                    (tmp / name).mkdir(mode=0o755)
                else:
                    (tmp / name).touch(mode=0o644)
            for entry in (tmp, *tmp.rglob("*")):  # (whatever the umask took away)
                entry.chmod(0o755 if entry.is_dir() else 0o644)
            os.rename(tmp, target)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise RuntimeBackendError(f"cannot make {target}: {exc}") from exc
    return target


def ensure_binary(data_dir: Path, source: Path, name: str) -> Path:
    """Compile ``source`` into ``<data_dir>/lib/<name>-<sha>`` unless already there.

    Returns:
        Path of the executable.

    Raises:
        RuntimeBackendError: the source is missing or gcc failed.
    """
    try:
        text = source.read_bytes()
    except OSError as exc:
        raise RuntimeBackendError(f"cannot read {source}: {exc}") from exc
    digest = hashlib.sha256(text).hexdigest()[:16]
    target = data_dir / "lib" / f"{name}-{digest}"
    with _lock:
        if not target.is_file():
            _compile(source, target)
    return target


def _compile(source: Path, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        run(["gcc", "-static", "-O2", "-Wall", "-o", str(tmp), str(source)], timeout=120)
        os.chmod(tmp, 0o755)
        os.rename(tmp, target)
    except OSError as exc:
        raise RuntimeBackendError(f"cannot install {target.name}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
