"""The static cove-init binary, compiled from init.c on first use."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

from cove.errors import RuntimeBackendError
from cove.runtime.proc import run

SOURCE = Path(__file__).with_name("init.c")
_lock = threading.Lock()


def ensure_init_binary(data_dir: Path) -> Path:
    """Compile init.c into ``<data_dir>/lib/cove-init-<sha>`` unless already there.

    Args:
        data_dir: The server's data directory.

    Returns:
        Path of the executable.

    Raises:
        RuntimeBackendError: the source is missing or gcc failed.
    """
    try:
        source = SOURCE.read_bytes()
    except OSError as exc:
        raise RuntimeBackendError(f"cannot read {SOURCE}: {exc}") from exc
    digest = hashlib.sha256(source).hexdigest()[:16]
    target = data_dir / "lib" / f"cove-init-{digest}"
    with _lock:
        if not target.is_file():
            _compile(target)
    return target


def _compile(target: Path) -> None:
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        run(["gcc", "-static", "-O2", "-Wall", "-o", str(tmp), str(SOURCE)], timeout=120)
        os.chmod(tmp, 0o755)
        os.rename(tmp, target)
    except OSError as exc:
        raise RuntimeBackendError(f"cannot install cove-init: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
