"""Resolving a user name to ids from a sandbox's own /etc/passwd and /etc/group."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cove.errors import BadRequest
from cove.runtime.fsutil import read_in_root


@dataclass(frozen=True)
class User:
    """A user of a sandbox, as exec runs it."""

    name: str
    uid: int
    gid: int
    home: str
    groups: tuple[int, ...] = ()


def resolve(rootfs: Path, spec: str) -> User:
    """Look ``spec`` (``name``, ``uid`` or ``uid:gid``) up in the sandbox's files.

    Args:
        rootfs: The sandbox's mounted root filesystem (read symlink-safely).
        spec: User name or numeric ids.

    Raises:
        BadRequest: a user name that the sandbox does not know.
        RuntimeBackendError: the files cannot be read safely.
    """
    entries = [r for r in _table(rootfs, "etc/passwd", 7) if r[3].isdigit()]
    name, _, gid_text = spec.partition(":")
    if name.isdigit():
        uid = int(name)
        row = next((r for r in entries if r[2] == name), None)
        gid = int(gid_text) if gid_text.isdigit() else int(row[3]) if row else uid
        user = User(row[0] if row else name, uid, gid, row[5] if row else "/")
    else:
        row = next((r for r in entries if r[0] == name), None)
        if row is None:
            if name != "root":
                raise BadRequest(f"no user {name!r} in the sandbox")
            row = ["root", "x", "0", "0", "", "/root"]
        user = User(row[0], int(row[2]), int(row[3]), row[5] or "/")
    return _with_groups(rootfs, user)


def _table(rootfs: Path, path: str, columns: int) -> list[list[str]]:
    """Rows of a colon-separated file with ``columns`` fields and a numeric 3rd one."""
    data = read_in_root(rootfs, path) or b""
    rows = [line.split(":") for line in data.decode(errors="replace").splitlines()]
    return [r for r in rows if len(r) == columns and r[2].isdigit()]


def _with_groups(rootfs: Path, user: User) -> User:
    groups = sorted(
        {int(r[2]) for r in _table(rootfs, "etc/group", 4) if user.name in r[3].split(",")}
        - {user.gid}
    )
    return User(user.name, user.uid, user.gid, user.home, tuple(groups))
