"""Sandbox namespaces made ahead: a cold start takes a ready set instead of making one.

Every first start of a sandbox makes its user namespace, its workload's nested one
and its network namespace (``rootfs.make_namespaces``: one ``cove-nsexec`` run, 3-4
ms here). A stock keeps ``COVE_NS_STOCK`` such sets, made in a worker thread once
no start is under way (``foreground``), each with the host id range its user
namespace maps, leased for the stock (``idrange``: the registry's claim names
``<data dir>/ns-stock`` and the set).

A set is held by its three descriptors only: the mounts ``cove-nsexec`` made are
detached as soon as they are opened, so nothing of the stock is mounted, and when
the server goes (even killed) its namespaces go with its descriptors. Taking a set
hands its range's claim to the sandbox (one rename, see ``idrange.transfer``) and
binds the three namespaces where ``make_namespaces`` would have mounted them; what
cannot be bound is made as before, on the sandbox's (new) range. The network
namespace is fresh: loopback only, the sysctls set; it is wired as a new one is.

A server stopped by a signal leaves its stock's claims in the registry: the claims
of stocks whose server is gone (the pid in their name) are removed, with this data
dir's scratch directories of such servers, before a server makes its first set.
Only the first start of a sandbox takes a set: a sandbox that has a range keeps it
(its namespaces are made on it again).
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cove.errors import RuntimeBackendError
from cove.runner.host import idrange, mountapi, mounts, proc, rootfs
from cove.runner.host.foreground import Refiller
from cove.runner.host.idrange import IdRange
from cove.runner.layout import SandboxPaths

STOCK_DIR = "ns-stock"  # in the data dir: the stock's scratch; the data dir of its claims
REFILL_DELAY = 0.05  # seconds between a take and the sets made after it (then: once idle)
log = logging.getLogger(__name__)


@dataclass
class _Set:
    """One set made ahead: its claim's name, its range, descriptors of its namespaces
    (user, workload, network)."""

    name: str
    ids: IdRange
    fds: list[int]

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []


@dataclass
class _Held:
    """What the stock holds (apart from it, so that a finalizer can let it go)."""

    owner: Path
    ready: list[_Set] = field(default_factory=list)
    guard: threading.Lock = field(default_factory=threading.Lock)

    def release(self) -> None:
        """Close every ready set and give its range back."""
        with self.guard:
            sets, self.ready = self.ready, []
        for held in sets:
            held.close()
            idrange.drop(held.ids, (self.owner, held.name))


class NamespaceStock:
    """The namespace sets made ahead for the sandboxes of ``data_dir``.

    Args:
        data_dir: the server's data dir (the stock's claims and scratch directories
            are under ``<data_dir>/ns-stock``).
        nsexec: the path of ``cove-nsexec`` (called when a set is made).
        keep: how many sets to keep ready (0: none, ``take`` gives nothing).
        idle: called before each set is made: returns once no start is under way
            (see ``foreground.Foreground.wait_idle``).
    """

    def __init__(self, data_dir: Path, nsexec: Callable[[], Path], keep: int,
                 idle: Callable[[], object] = lambda: None) -> None:  # fmt: skip
        self.keep = keep
        self._nsexec = nsexec
        self._held = _Held(data_dir / STOCK_DIR)
        self._swept = False
        self._sweeping = threading.Lock()  # (the server's start and the first fill)
        self._refiller = Refiller("cove-ns-stock", idle)
        # Sets left when the stock goes (or the server exits) are let go at once.
        self._finalizer = weakref.finalize(self, self._held.release)

    @property
    def owner(self) -> Path:
        """What the registry's claims of the stock name as their data dir."""
        return self._held.owner

    def ready(self) -> int:
        """How many sets are ready now."""
        with self._held.guard:
            return len(self._held.ready)

    def take(self, paths: SandboxPaths) -> IdRange | None:
        """Give the sandbox at ``paths`` a ready set: its id range (recorded as the
        sandbox's) and its namespaces, bound where the sandbox keeps them. None when no
        set is ready (the caller leases a range and makes them). Either way, the stock
        is made up again in the background."""
        if self.keep <= 0:
            return None
        with self._held.guard:
            taken = self._held.ready.pop(0) if self._held.ready else None
        self._refill()
        if taken is None:
            return None
        try:
            try:
                idrange.transfer(taken.ids, (self.owner, taken.name), paths.root, paths.data_dir)
            except RuntimeBackendError as exc:
                log.warning("namespaces made ahead not taken: %s", exc)
                idrange.drop(taken.ids, (self.owner, taken.name))
                return None
            _bind(taken.fds, paths)
        finally:
            taken.close()
        return taken.ids

    def close(self) -> None:
        """Let every ready set go (their ranges are given back), once the set being
        made (if any) is made."""
        self._refiller.shutdown()
        self._finalizer()

    # ---- making sets ---------------------------------------------------------

    def _refill(self) -> None:
        self._refiller.refill(
            None, lambda: self.ready() < self.keep and self._finalizer.alive, self._add,
            delay=REFILL_DELAY, what="sandbox namespaces")  # fmt: skip

    def _add(self) -> None:
        if not self._swept:
            self.sweep()
        made = self._make()
        with self._held.guard:
            self._held.ready.append(made)

    def _make(self) -> _Set:
        name = f"{os.getpid()}.{uuid.uuid4().hex[:16]}"
        scratch = SandboxPaths(self.owner / name)
        ids = None
        fds: list[int] = []
        try:
            self.owner.mkdir(mode=0o700, exist_ok=True)
            scratch.root.mkdir(mode=0o700)
            ids = idrange.lease(scratch.root, self.owner)
            try:
                rootfs.make_namespaces(self._nsexec(), scratch, ids)
                for path in (scratch.userns, scratch.workns, scratch.netns):
                    fds.append(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
            finally:
                for path in (scratch.netns, scratch.workns, scratch.userns):
                    mounts.detach(path)  # (the descriptors hold the namespaces)
            shutil.rmtree(scratch.root)
        except BaseException:
            for fd in fds:
                os.close(fd)
            if ids is not None:
                idrange.drop(ids, (self.owner, name))
            shutil.rmtree(scratch.root, ignore_errors=True)
            raise
        return _Set(name, ids, fds)

    def sweep(self) -> None:
        """Remove the claims of stocks whose server is gone (any data dir's: a server
        stopped by a signal leaves them, and its data dir may never serve again), and
        this data dir's scratch directories of such servers (a server killed while it
        made a set leaves its namespaces mounted there). Done when the server starts
        (with the other stale work), else before the first set is made."""
        with self._sweeping:
            self._swept = True
            for index, (owner, name) in idrange.owners().items():
                if Path(owner).name == STOCK_DIR and not _alive(name):
                    idrange.drop(IdRange(index), (Path(owner), name))
            try:
                left = [p for p in self.owner.iterdir() if not _alive(p.name)]
            except FileNotFoundError:
                return
            for scratch in left:
                mounts.unmount_under(scratch)
                shutil.rmtree(scratch, ignore_errors=True)


def _bind(fds: list[int], paths: SandboxPaths) -> None:
    """Bind the namespaces ``fds`` (user, workload, network) at the sandbox's paths;
    on a failure, none stays bound (they are then made anew)."""
    bound: list[Path] = []
    try:
        for fd, target in zip(fds, (paths.userns, paths.workns, paths.netns), strict=True):
            rootfs.placeholder(target)
            mountapi.bind(fd, target)
            bound.append(target)
    except (RuntimeBackendError, OSError) as exc:
        log.warning("namespaces made ahead not bound (made anew): %s", exc)
        for target in reversed(bound):
            mounts.unmount(target)


def _alive(name: str) -> bool:
    """Whether the server that named a claim or directory ``<pid>.<id>`` still runs
    (names of another form are left alone)."""
    pid, _, _rest = name.partition(".")
    return not pid.isdigit() or proc.running(int(pid))
