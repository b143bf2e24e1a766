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

A pax header is also checked before :mod:`tarfile` parses it: it must be a run of
well-formed records (``"<length> <keyword>=<value>\n"``, each exactly its length, as
Go's reader requires), and no run of digits in it may be longer than
:data:`MAX_DIGITS`. Pythons before 3.11.10 and 3.12.6 (CVE-2024-6232) parse a pax
header with backtracking regular expressions: one 64 KiB run of digits takes seconds
of CPU, a 1 MiB header hours. Checked, a header costs them linear time.
"""

from __future__ import annotations

import re
import tarfile
from typing import Any, Self

MAX_HEADER = 2**20  # bytes of one pax header, GNU long name or long link
MAX_HEADERS = 4 * 2**20  # bytes of all that precedes one member's data (sparse maps too)
MAX_DIGITS = 32  # one run of digits in a pax header (a time, size or id takes at most 21)
_PAX = frozenset({tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE})
_DIGITS = re.compile(rb"\d{%d}" % (MAX_DIGITS + 1))
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
        tarfile_.fileobj = _Bounded(stream, MAX_HEADERS, self.size if self.type in _PAX else None)
        try:
            return super()._proc_member(tarfile_)  # type: ignore[misc,no-any-return]
        finally:
            tarfile_.fileobj = stream


class _Bounded:
    """The archive's stream, refusing to read more than ``budget`` bytes in all; with
    ``pax`` (the header's size), its first read is a pax header's body, checked."""

    def __init__(self, stream: Any, budget: int, pax: int | None = None) -> None:  # noqa: ANN401 - tarfile's stream
        self._stream, self._budget, self._pax = stream, budget, pax

    def read(self, size: int) -> bytes:
        self._budget -= size
        if self._budget < 0:
            raise tarfile.ReadError(f"a member's headers take more than {MAX_HEADERS} bytes")
        data: bytes = self._stream.read(size)
        if self._pax is not None:
            check_pax(data[: self._pax])
            self._pax = None
        return data

    def __getattr__(self, name: str) -> Any:  # noqa: ANN401 - the stream's own (tell)
        return getattr(self._stream, name)


def check_pax(body: bytes) -> None:
    """Refuse a pax header that is not all well-formed records, or that holds a run of
    more than :data:`MAX_DIGITS` digits (both found in one linear pass each)."""
    if _DIGITS.search(body):
        raise tarfile.ReadError(f"a pax header with a run of more than {MAX_DIGITS} digits")
    pos = 0
    while pos < len(body):
        space = body.find(b" ", pos, pos + MAX_DIGITS + 1)
        field = body[pos:space]
        end = pos + int(field) if space > pos and field.isdigit() else 0
        equals = body.find(b"=", space + 1, end)
        if not space + 1 < equals < end - 1 or body[end - 1 : end] != b"\n":
            raise tarfile.ReadError(f"a malformed pax record at byte {pos}")
        pos = end
