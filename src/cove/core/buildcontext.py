"""The files a ``COPY``/``ADD`` takes from the uploaded build contexts, repacked.

Context archives are hostile input. They are never extracted on the host: the
entries a step names are read with :mod:`tarfile` and written into a new tar,
which the build sandbox itself extracts (as its root, inside its own root
filesystem; see :mod:`cove.core.builds`). On the way, an entry is dropped when
its name is absolute after normalizing or climbs with ``..``, when it lies
under a symbolic link of the archive, or when it is a device node, FIFO or a
hard link to something not copied; owners become root (or ``--chown``, applied
in the sandbox) and modes keep their permission bits only. The files' sizes together
stay under a limit (the build sandbox's disk): a sparse member of a few bytes in the
archive says what it unpacks to, and would be written out whole on the host.
"""

from __future__ import annotations

import posixpath
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from cove.core.tarheaders import TarInfo

ARCHIVES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
ADD_DIR = ".cove-add"  # where ADD's archives wait in the sandbox to be extracted


class ContextError(Exception):
    """A step names something the contexts do not have, or they are not valid tars, or
    what it names is too large."""


@dataclass
class Packed:
    entries: list[str] = field(default_factory=list)  # absolute paths in the sandbox
    extract: list[tuple[str, str]] = field(default_factory=list)  # ADD: (archive, into dir)
    limit: int = 0  # bytes the files may take
    size: int = 0  # bytes they take so far


def pack(
    contexts: Sequence[Path], sources: Sequence[str], dest: str, out: IO[bytes], *,
    limit: int, add: bool = False,
) -> Packed:  # fmt: skip
    """Write what ``COPY sources dest`` (or ``ADD``) puts in the image to ``out``, a tar
    whose names are relative to ``/``, of files taking at most ``limit`` bytes.

    Raises:
        ContextError: a source is in no context, a context is not a valid tar, or the
            files pass ``limit`` (counting stops there).
    """
    wanted = [_norm(s) for s in sources]  # None: climbs out, never found
    found: set[str | None] = set()
    packed = Packed(limit=limit)
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for context in contexts:
            try:
                with tarfile.open(context, "r:", tarinfo=TarInfo) as src:
                    _pack_one(src, tar, wanted, dest, add, found, packed)
            except tarfile.TarError as exc:
                raise ContextError(f"the build context is not a valid tar: {exc}") from exc
    missing = [s for s, w in zip(sources, wanted, strict=True) if w not in found]
    if missing:
        raise ContextError(f"{', '.join(missing)} not found in the build context")
    return packed


def _pack_one(
    src: tarfile.TarFile, tar: tarfile.TarFile, wanted: list[str | None], dest: str, add: bool,
    found: set[str | None], packed: Packed,
) -> None:  # fmt: skip
    links: set[str] = set()
    mapped: dict[str, str] = {}
    for member in src:
        name = _norm(member.name)
        if name is None or any(name == ln or name.startswith(ln + "/") for ln in links):
            continue
        if member.issym():
            links.add(name)
        for source in wanted:
            target = _target(name, source, member.isdir(), dest)
            if target is None:
                continue
            found.add(source)
            if member.isdir() and name == source:
                continue  # a directory's contents are copied, not the directory itself
            if member.isfile():
                packed.size += member.size
                if packed.size > packed.limit:
                    raise ContextError(f"the files take more than {packed.limit // 2**20} MiB "
                                       "(the build sandbox's disk)")  # fmt: skip
            if add and member.isfile() and name == source and name.endswith(ARCHIVES):
                where = f"{ADD_DIR}/{len(packed.extract)}/{posixpath.basename(name)}"
                _write(src, tar, member, where, None)
                packed.extract.append(("/" + where, posixpath.normpath(dest)))
                continue
            if _write(src, tar, member, target, mapped):
                mapped[name] = target
                packed.entries.append("/" + target)


def _write(
    src: tarfile.TarFile, tar: tarfile.TarFile, member: tarfile.TarInfo, target: str,
    mapped: dict[str, str] | None,
) -> bool:  # fmt: skip
    info = tarfile.TarInfo(target or ".")
    info.mode, info.mtime = member.mode & 0o7777, member.mtime
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    if member.isfile():
        info.size = member.size
        tar.addfile(info, src.extractfile(member))
        return True
    if member.isdir():
        info.type = tarfile.DIRTYPE
    elif member.issym():
        info.type, info.linkname = tarfile.SYMTYPE, member.linkname
    elif member.islnk() and mapped is not None and _norm(member.linkname) in mapped:
        info.type, info.linkname = tarfile.LNKTYPE, mapped[_norm(member.linkname) or ""]
    else:
        return False  # devices, FIFOs, hard links to what was not copied
    tar.addfile(info)
    return True


def _norm(name: str) -> str | None:
    """An entry's path relative to the context root; None when it climbs out."""
    path = posixpath.normpath("/" + name.lstrip("/").removeprefix("./"))
    if ".." in name.split("/"):
        return None
    return path.lstrip("/")


def _target(name: str, source: str | None, is_dir: bool, dest: str) -> str | None:
    """Where entry ``name`` goes for ``source`` (relative to /), or None: not under it."""
    if source is None:
        return None
    if name == source or source == "":
        rel = "" if name == source else name
        if not rel and not is_dir and dest.endswith("/"):
            rel = posixpath.basename(name)
    elif name.startswith(source + "/"):
        rel = name[len(source) + 1 :]
    else:
        return None
    return posixpath.normpath(posixpath.join("/", dest, rel)).lstrip("/")
