"""Unpacking a root filesystem from a tar stream nobody here vouches for (a snapshot
fetched from a shared object store that other parties write to).

Every member is checked before it is written, and one bad member stops the whole
extraction (the caller throws the half-made tree away):

- its path is relative, without ``..``, and lands inside the target once the links
  already extracted are followed (a symbolic link ``a -> /etc`` then ``a/passwd`` is
  refused);
- a symbolic link may point anywhere absolute (a root filesystem's ``/etc/localtime
  -> /usr/share/...`` is resolved inside the sandbox's root), but a relative one may
  not climb above the target; a hard link names a path inside the target;
- the types are those of a root filesystem: files, directories, links, FIFOs, and
  of device nodes only the character devices a ``/dev`` holds (null, zero, full,
  random, urandom, tty, console, ptmx); no block device;
- the files' sizes together stay under a limit (a small stream may unpack to
  terabytes), and no extended header is over 1 MiB (:mod:`cove.core.tarheaders`).

Owners (numeric), modes (setuid kept: a root filesystem's ``su`` needs it) and
times are kept; of the extended attributes only ``security.capability`` (file
capabilities), never an overlay's or a trusted one.
"""

from __future__ import annotations

import os
import posixpath
import tarfile
from pathlib import Path
from typing import IO

from cove.core.tarheaders import TarInfo
from cove.errors import RuntimeBackendError

BLOCK = 512
# (major, minor) of the character devices a root filesystem's /dev may hold.
DEVICES = {(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 1), (5, 2)}
XATTRS = ("security.capability",)
XATTR_PREFIX = "SCHILY.xattr."
MAX_XATTR = 4096  # bytes of one attribute's value
MAX_XATTR_FILES = 100_000


class UnsafeTar(RuntimeBackendError):
    """A member that would write outside the target, or that no root filesystem has."""


def extract(stream: IO[bytes], target: Path, limit: int) -> int:
    """Unpack the (uncompressed) tar ``stream`` into the directory ``target``; returns
    the bytes its members take (as counted against ``limit``).

    Raises:
        UnsafeTar: a member was refused (what was written before it stays: extract
            into a fresh directory and remove it on failure).
        RuntimeBackendError: the stream is not a valid tar, or writing failed.
    """
    guard = _Guard(target, limit)
    try:
        with tarfile.open(fileobj=stream, mode="r|", tarinfo=TarInfo) as tar:
            tar.extractall(target, members=guard.members(tar), numeric_owner=True,
                           filter=guard.check)  # fmt: skip
    except UnsafeTar:
        raise
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        raise RuntimeBackendError(f"cannot unpack the snapshot: {exc}") from exc
    guard.set_xattrs()
    return guard.total


class _Guard:
    def __init__(self, target: Path, limit: int) -> None:
        self.root = os.path.realpath(target)
        self.limit, self.total = limit, 0
        self.xattrs: list[tuple[str, str, bytes]] = []

    def members(self, tar: tarfile.TarFile):  # noqa: ANN201 - an iterator of TarInfo
        for member in tar:
            self.total += BLOCK + (max(0, member.size) if member.isreg() else 0)
            if self.total > self.limit:
                raise UnsafeTar(f"the snapshot unpacks to more than {self.limit // 2**20} MiB")
            yield member

    def check(self, member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
        """tarfile's extraction filter: the member as it is, None to skip it (the
        target's own entry), or UnsafeTar."""
        name = self._relative(member.name)
        if name == ".":
            return None
        self._inside(os.path.join(self.root, name), member.name)
        if member.issym():
            self._symlink(name, member.linkname)
        elif member.islnk():
            link = self._relative(member.linkname)
            self._inside(os.path.join(self.root, link), member.linkname)
        elif member.ischr():
            if (member.devmajor, member.devminor) not in DEVICES or \
                    posixpath.basename(posixpath.dirname(name)) != "dev":  # fmt: skip
                raise UnsafeTar(f"device node {member.name!r} "
                                f"({member.devmajor}:{member.devminor}) refused")  # fmt: skip
        elif not (member.isreg() or member.isdir() or member.isfifo()):
            raise UnsafeTar(f"member {member.name!r} of type {member.type!r} refused")
        self._keep_xattrs(member, name)
        return member

    def _relative(self, name: str) -> str:
        if not name or "\0" in name or name.startswith("/"):
            raise UnsafeTar(f"member {name!r}: not a relative path")
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise UnsafeTar(f"member {name!r}: '..' in its path")
        return "/".join(parts) or "."

    def _inside(self, path: str, shown: str) -> None:
        """``path`` with the links already extracted followed stays in the target."""
        real = os.path.realpath(path)
        if real != self.root and not real.startswith(self.root + os.sep):
            raise UnsafeTar(f"member {shown!r} leads outside the target")

    def _symlink(self, name: str, target: str) -> None:
        if not target or "\0" in target:
            raise UnsafeTar(f"link {name!r}: empty target")
        if target.startswith("/"):
            return  # resolved in the sandbox's root
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
        if resolved == ".." or resolved.startswith("../"):
            raise UnsafeTar(f"link {name!r} -> {target!r} leads outside the target")

    def _keep_xattrs(self, member: tarfile.TarInfo, name: str) -> None:
        if not member.isreg():
            return
        for key in XATTRS:
            value = member.pax_headers.get(XATTR_PREFIX + key)
            if value is None:
                continue
            raw = value.encode("utf-8", "surrogateescape")
            if len(raw) > MAX_XATTR or len(self.xattrs) >= MAX_XATTR_FILES:
                raise UnsafeTar(f"member {member.name!r}: extended attributes refused")
            self.xattrs.append((name, key, raw))

    def set_xattrs(self) -> None:
        """File capabilities, set after the owners (a chown clears them)."""
        for name, key, value in self.xattrs:
            path = os.path.join(self.root, name)
            self._inside(path, name)
            try:
                os.setxattr(path, key, value, follow_symlinks=False)
            except OSError as exc:
                raise RuntimeBackendError(f"cannot set {key} on {name}: {exc}") from exc
