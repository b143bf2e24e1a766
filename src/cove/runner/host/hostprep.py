"""Host-wide kernel settings that sandboxes need, applied once before the first start.

- ``fs.file-max`` to its maximum (as systemd does): open files are then bounded
  per sandbox by its memory cgroup, which is charged for every file it holds,
  instead of by one host-wide count that a single sandbox could exhaust for all.
- ``kernel.pid_max`` up to 4194304 (systemd's own setting on 64-bit hosts): every
  started sandbox holds three host tasks even when idle (init, and the jbd2 thread
  and ext4-rsv-conversion rescuer of its disk), so the kernel's default of 32768
  would cap a host near 10,000.
- ``fs.aio-max-nr`` to its maximum: kernel AIO events (``io_setup``: MySQL's InnoDB,
  libaio) are counted host-wide against it (65536 by default), which one sandbox
  could take for every other and for the host. A sandbox's AIO rings are charged
  to its memory.
- ``kernel.pty.max`` to its maximum (1048576): every devpts but the host's own
  draws on one host-wide count of terminals (this less ``kernel.pty.reserve``,
  3072 by default), which three sandboxes holding their own bound
  (``spec.PTY_MAX``, its devpts' max) would use up for every other sandbox. Each
  sandbox stays bounded by its own max, and its terminals are charged to its memory.
- ``fs.inotify.max_user_instances`` and ``max_user_watches`` to their maximum: a
  sandbox's inotify instances and watches are charged, past its own user
  namespaces, to the host uid that owns them (root, who makes them), against these
  per-user limits (128 instances and about 100,000 watches by default), so one
  sandbox (a file watcher on a large tree) could use them up for every other and
  for the host's root. They are charged to the sandbox's memory instead.
- ``dev.tty.legacy_tiocsti`` off: TIOCSTI (pushing input into a terminal another
  process reads) needs CAP_SYS_ADMIN, as it does by default since Linux 6.2.
- this process's soft ``RLIMIT_NOFILE`` up to its hard limit: the server holds two
  descriptors per started sandbox (its DNS listener and its agent channel), and a
  service manager's usual soft limit of 1024 would cap a host at about 500.

- the cgroup root's ``favordynmods`` (Linux 6.0+, unless ``COVE_CGROUP_FAVOR_DYNMODS``
  is off): moving a process into a cgroup otherwise waits for an RCU grace period
  (measured here: 9 ms p50, 21 ms p90), as every sandbox's start does (crun moves its
  init) and every command's spare process (``agent/spare.py``). With it, 0.1 ms. The
  kernel's price is on fork and exit, which take a slower lock path: a fork+exec of
  ``/bin/true`` took 0.73-0.80 ms with it, against 0.7 ms measured without it on the
  same host (not in the same run: once set, the flag stays). The flag belongs
  to the cgroup2 root, which is one for the whole host (a hybrid host's
  ``/sys/fs/cgroup/unified`` too), so it is set by remounting that mount with its own
  options plus this one; the setting stays until the host reboots.

(``net.ipv4.ip_forward`` is turned on by the network, see ``runner/host/network.py``.)
"""

from __future__ import annotations

import logging
import resource
import threading
from collections.abc import Iterable
from pathlib import Path

from cove.errors import RuntimeBackendError
from cove.runner.host import mounts, proc

FILE_MAX = Path("/proc/sys/fs/file-max")
LEGACY_TIOCSTI = Path("/proc/sys/dev/tty/legacy_tiocsti")
FILE_MAX_VALUE = (1 << 63) - 1
PID_MAX = Path("/proc/sys/kernel/pid_max")
PID_MAX_VALUE = 1 << 22
INOTIFY_INSTANCES = Path("/proc/sys/fs/inotify/max_user_instances")
INOTIFY_WATCHES = Path("/proc/sys/fs/inotify/max_user_watches")
INOTIFY_MAX = (1 << 31) - 1  # (what a new user namespace starts with)
AIO_MAX_NR = Path("/proc/sys/fs/aio-max-nr")
PTY_MAX = Path("/proc/sys/kernel/pty/max")
PTY_MAX_VALUE = 1 << 20  # (the kernel's NR_UNIX98_PTY_MAX)
CGROUP_FEATURES = Path("/sys/kernel/cgroup/features")
FAVOR_DYNMODS = "favordynmods"
log = logging.getLogger(__name__)
_done = threading.Event()


def prepare(*, favor_dynmods: bool = True) -> None:
    """Apply the settings (idempotent; a setting the host refuses is logged, not fatal)."""
    if _done.is_set():
        return
    _raise_to(FILE_MAX, FILE_MAX_VALUE)
    _raise_to(PID_MAX, PID_MAX_VALUE)
    _raise_to(AIO_MAX_NR, FILE_MAX_VALUE)
    _raise_to(PTY_MAX, PTY_MAX_VALUE)
    _raise_to(INOTIFY_INSTANCES, INOTIFY_MAX)
    _raise_to(INOTIFY_WATCHES, INOTIFY_MAX)
    _set(LEGACY_TIOCSTI, "0")
    _raise_nofile()
    if favor_dynmods:
        _favor_dynmods()
    _done.set()


def cgroup2_mount(table: Iterable[mounts.Mount]) -> mounts.Mount | None:
    """The first cgroup2 mount of a mount table (see ``mounts.mount_table``), or None."""
    return next((m for m in table if m.fstype == "cgroup2"), None)


def remount_argv(mount: mounts.Mount) -> list[str] | None:
    """The ``mount`` command that adds ``favordynmods`` to the cgroup2 ``mount``
    keeping its options (a reconfiguration sets every flag of the root anew, so its
    others, say ``nsdelegate``, are passed again); None when it is set."""
    if FAVOR_DYNMODS in mount.options:
        return None
    kept = sorted(mount.options - {"rw", "ro"})
    return ["mount", "-o", ",".join(["remount", *kept, FAVOR_DYNMODS]), mount.point]


def _favor_dynmods() -> None:
    try:
        supported = FAVOR_DYNMODS in CGROUP_FEATURES.read_text().split()
        found = cgroup2_mount(mounts.mount_table())
    except OSError:
        return
    if not supported or found is None:
        log.info("cgroup migrations wait for RCU grace periods: %s",
                 "no cgroup2 mount" if supported else "the kernel has no favordynmods")
        return
    argv = remount_argv(found)
    if argv is None:
        return
    try:
        proc.run(argv, timeout=30)
    except RuntimeBackendError as exc:
        log.warning("cannot set favordynmods on %s: %s", found.point, exc.message)


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
