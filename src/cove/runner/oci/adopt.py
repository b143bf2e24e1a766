"""A warm pool's running sandbox taking on the settings of the create that claimed it.

A pooled sandbox was started before anyone asked for it, under its own id as its
name. When a create claims it, what the container baked in at start is made what a
cold start of that create would have made: the hostname of its UTS namespace (set
from the host, joining that namespace in one worker thread and leaving it again),
``/etc/hostname`` and ``/etc/hosts``, and the recorded user and env. Nothing of a
tenant has run in it yet, so the files written here are the server's own.
"""

from __future__ import annotations

import ctypes
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from cove.core.ports import ContainerSpec
from cove.errors import RuntimeBackendError
from cove.runner.host.waiting import readable
from cove.runner.layout import Metadata, SandboxPaths
from cove.runner.oci.container import _write_etc
from cove.runner.storage import unpack

CLONE_NEWUTS = 0x04000000
_libc = ctypes.CDLL(None, use_errno=True)


def adopt(paths: SandboxPaths, meta: Metadata, group: str, spec_: ContainerSpec,
          nameserver: str | None) -> Metadata:  # fmt: skip
    """Give the running sandbox ``spec_``'s hostname, user and env; returns its new
    metadata (written).

    Raises:
        RuntimeBackendError: its init does not run, or the hostname could not be set
            (say it is too long).
    """
    with init_uts(paths, group) as uts:
        set_hostname(uts, spec_.hostname)
    _write_etc(paths, spec_.hostname, nameserver=nameserver)
    image_env = unpack.image_env(Path(meta.lower))
    meta = replace(meta, hostname=spec_.hostname, user=spec_.user,
                   env={**image_env, **spec_.env})  # fmt: skip
    paths.write_metadata(meta)
    return meta


@contextmanager
def init_uts(paths: SandboxPaths, group: str) -> Iterator[int]:
    """A descriptor of the UTS namespace of the sandbox's running init, without asking
    crun (a process of its own): the pid crun wrote at start, checked to be a process
    of the sandbox's cgroup ``group`` that did not exit before its namespace was opened
    (so a recycled pid never names another process).

    Raises:
        RuntimeBackendError: the sandbox's init does not run.
    """
    try:
        pid = int((paths.bundle / "init.pid").read_text())
        pidfd = os.pidfd_open(pid)
    except (OSError, ValueError) as exc:
        raise RuntimeBackendError(f"the sandbox's init does not run: {exc}") from exc
    try:
        try:
            cgroups = Path(f"/proc/{pid}/cgroup").read_text()
            uts = os.open(f"/proc/{pid}/ns/uts", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise RuntimeBackendError(f"the sandbox's init does not run: {exc}") from exc
        try:
            exited = readable(pidfd, 0)
            if exited or f"/{group}/" not in cgroups.replace("\n", "/\n"):
                raise RuntimeBackendError(f"process {pid} is not the sandbox's init")
            yield uts
        finally:
            os.close(uts)
    finally:
        os.close(pidfd)


def set_hostname(uts: int, hostname: str) -> None:
    """Set the hostname of the UTS namespace ``uts`` (a descriptor).

    Raises:
        RuntimeBackendError: the namespace cannot be joined, or the kernel refuses
            the name (over 64 bytes).
    """
    own = os.open("/proc/thread-self/ns/uts", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(uts)
        try:
            socket.sethostname(hostname)
        except OSError as exc:
            raise RuntimeBackendError(f"cannot set hostname {hostname!r}: {exc}") from exc
        finally:
            _setns(own)  # this worker thread goes back to the host's namespace
    finally:
        os.close(own)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWUTS) != 0:
        err = ctypes.get_errno()
        raise RuntimeBackendError(f"setns(uts) failed: {os.strerror(err)}")
