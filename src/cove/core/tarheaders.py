"""Reading tar archives nobody here vouches for (image layers, snapshot archives,
build contexts) without letting one member's headers take the host's memory.

:mod:`tarfile` reads what comes before a member's own data whole into memory before
the member is seen: the body of an extended header (pax records, a GNU long name or
link target) at once, and a sparse file's map (old GNU extended blocks, or pax 1.0's
map) into a list of its entries. One such header of 8 GiB compresses to a few MiB,
and no check on the members' sizes runs before it is allocated. :class:`TarInfo`
refuses an extended header over :data:`MAX_HEADER` before reading it, and stops
reading once one member's headers pass :data:`MAX_HEADERS`; pass it as
``tarfile.open(..., tarinfo=TarInfo)``. The limit is Go's ``archive/tar`` one, so any
archive Docker, skopeo or umoci read is read here too.
"""

from __future__ import annotations

import tarfile
from typing import Any, Self

MAX_HEADER = 2**20  # bytes of one pax header, GNU long name or long link
MAX_HEADERS = 4 * 2**20  # bytes of all that precedes one member's data (sparse maps too)
_HEADERS = frozenset({tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE,
                      tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK})  # fmt: skip


class TarInfo(tarfile.TarInfo):
    """A member whose headers take at most :data:`MAX_HEADERS` bytes, each extended
    header at most :data:`MAX_HEADER`."""

    def _proc_member(self, tarfile_: tarfile.TarFile) -> Self:
        if self.type in _HEADERS and self.size > MAX_HEADER:
            raise tarfile.ReadError(
                f"an extended header of {self.size} bytes (more than {MAX_HEADER})")  # fmt: skip
        if self.type not in _HEADERS and self.type != tarfile.GNUTYPE_SPARSE:
            return super()._proc_member(tarfile_)  # type: ignore[misc,no-any-return]  # (private: no stub)
        stream = tarfile_.fileobj
        tarfile_.fileobj = _Bounded(stream, MAX_HEADERS)
        try:
            return super()._proc_member(tarfile_)  # type: ignore[misc,no-any-return]
        finally:
            tarfile_.fileobj = stream


class _Bounded:
    """The archive's stream, refusing to read more than ``budget`` bytes in all."""

    def __init__(self, stream: Any, budget: int) -> None:  # noqa: ANN401 - tarfile's stream
        self._stream, self._budget = stream, budget

    def read(self, size: int) -> bytes:
        self._budget -= size
        if self._budget < 0:
            raise tarfile.ReadError(f"a member's headers take more than {MAX_HEADERS} bytes")
        data: bytes = self._stream.read(size)
        return data

    def __getattr__(self, name: str) -> Any:  # noqa: ANN401 - the stream's own (tell)
        return getattr(self._stream, name)
