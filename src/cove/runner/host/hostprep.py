"""Host-wide kernel settings that sandboxes need, applied once before the first start.

- ``fs.file-max`` to its maximum (as systemd does): open files are then bounded
  per sandbox by its memory cgroup, which is charged for every file it holds,
  instead of by one host-wide count that a single sandbox could exhaust for all.
- ``kernel.pid_max`` up to 4194304 (systemd's own setting on 64-bit hosts): every
  started sandbox holds three host tasks even when idle (init, and the jbd2 thread
  and ext4-rsv-conversion rescuer of its disk), so the kernel's default of 32768
  would cap a host near 10,000.
- ``dev.tty.legacy_tiocsti`` off: TIOCSTI (pushing input into a terminal another
  process reads) needs CAP_SYS_ADMIN, as it does by default since Linux 6.2.
- this process's soft ``RLIMIT_NOFILE`` up to its hard limit: the server holds two
  descriptors per started sandbox (its DNS listener and its agent channel), and a
  service manager's usual soft limit of 1024 would cap a host at about 500.

(``net.ipv4.ip_forward`` is turned on by the network, see ``runner/host/network.py``.)
"""

from __future__ import annotations

import logging
import resource
import threading
from pathlib import Path

FILE_MAX = Path("/proc/sys/fs/file-max")
LEGACY_TIOCSTI = Path("/proc/sys/dev/tty/legacy_tiocsti")
FILE_MAX_VALUE = (1 << 63) - 1
PID_MAX = Path("/proc/sys/kernel/pid_max")
PID_MAX_VALUE = 1 << 22
log = logging.getLogger(__name__)
_done = threading.Event()


def prepare() -> None:
    """Apply the settings (idempotent; a setting the host refuses is logged, not fatal)."""
    if _done.is_set():
        return
    _raise_to(FILE_MAX, FILE_MAX_VALUE)
    _raise_to(PID_MAX, PID_MAX_VALUE)
    _set(LEGACY_TIOCSTI, "0")
    _raise_nofile()
    _done.set()


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (OSError, ValueError) as exc:
            log.warning("cannot raise the open files limit: %s", exc)


def _raise_to(path: Path, value: int) -> None:
    try:
        if int(path.read_text().split()[0]) < value:
            path.write_text(f"{value}\n")
    except (OSError, ValueError) as exc:
        log.warning("cannot raise %s: %s", path, exc)


def _set(path: Path, value: str) -> None:
    try:
        if path.exists() and path.read_text().strip() != value:
            path.write_text(f"{value}\n")
    except OSError as exc:
        log.warning("cannot set %s: %s", path, exc)
