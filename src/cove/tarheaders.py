"""Reading tar archives nobody here vouches for (image layers, snapshot archives,
build contexts) without letting one header take the host's memory.

:mod:`tarfile` reads the body of an extended header (pax records, a GNU long name or
link target) whole into memory before the member it describes is seen: one such
header of 8 GiB compresses to a few MiB, and no check on the members' sizes runs
before it is allocated (twice, in a compressed stream). :class:`TarInfo` refuses a
header body over :data:`MAX_HEADER` before reading it; pass it as
``tarfile.open(..., tarinfo=TarInfo)``. The limit is Go's ``archive/tar`` one, so any
archive Docker, skopeo or umoci read is read here too.
"""

from __future__ import annotations

import tarfile
from typing import Self

MAX_HEADER = 2**20  # bytes of one pax header, GNU long name or long link
_HEADERS = frozenset({tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE,
                      tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK})  # fmt: skip


class TarInfo(tarfile.TarInfo):
    """A member whose extended headers are at most :data:`MAX_HEADER` bytes each."""

    def _proc_member(self, tarfile_: tarfile.TarFile) -> Self:
        if self.type in _HEADERS and self.size > MAX_HEADER:
            raise tarfile.ReadError(
                f"an extended header of {self.size} bytes (more than {MAX_HEADER})")  # fmt: skip
        return super()._proc_member(tarfile_)  # type: ignore[misc]  # (private, not in the stubs)
