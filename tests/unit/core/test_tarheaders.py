"""Pax headers are checked before tarfile parses them (CVE-2024-6232: Pythons before
3.11.10 spend time quadratic in a header's runs of digits on its regular expressions)."""

from __future__ import annotations

import io
import tarfile

import pytest

from cove.core.tarheaders import TarInfo


def _archive(pax: bytes) -> bytes:
    """One file ``f`` preceded by an extended header whose body is ``pax``, as is."""
    out = io.BytesIO()
    header = tarfile.TarInfo("PaxHeaders/f")
    header.type, header.size = tarfile.XHDTYPE, len(pax)
    out.write(header.tobuf(tarfile.USTAR_FORMAT))
    out.write(pax + b"\0" * (-len(pax) % tarfile.BLOCKSIZE))
    member = tarfile.TarInfo("f")
    member.size = 2
    out.write(member.tobuf(tarfile.USTAR_FORMAT) + b"hi".ljust(tarfile.BLOCKSIZE, b"\0"))
    out.write(b"\0" * 2 * tarfile.BLOCKSIZE)
    return out.getvalue()


def _names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data), tarinfo=TarInfo) as archive:
        return archive.getnames()


def _record(keyword: str, value: bytes) -> bytes:
    body = b" " + keyword.encode() + b"=" + value + b"\n"
    length = len(body) + len(str(len(body)))
    length += len(str(length)) - len(str(len(body)))
    return str(length).encode() + body


def test_a_well_formed_pax_header_is_read_as_tarfile_reads_it() -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name in ("d/" + "long-" * 60 + "é", "plain"):
            member = tarfile.TarInfo(name)
            member.mtime, member.pax_headers = 1700000000.123456, {"SCHILY.xattr.user.x": "1"}
            archive.addfile(member, io.BytesIO(b""))
    names = ["d/" + "long-" * 60 + "é", "plain"]
    assert _names(out.getvalue()) == names
    assert _names(_archive(_record("path", b"renamed") + _record("comment", b""))) == ["renamed"]


@pytest.mark.parametrize(("pax", "why"), [
    (_record("comment", b"1" * 65536), "a run of more than 32 digits"),  # the CVE's shape
    (b"1" * 40 + b" hdrcharset=BINARY\n", "a run of more than 32 digits"),
    (b"5 " + b"a" * 4000 + b"=x\n", "a malformed pax record at byte 0"),  # '=' past its end
    (_record("path", b"x") + b"junk", "a malformed pax record at byte 9"),
    (b"0 path=x\n", "a malformed pax record at byte 0"),
    (b"9 =value\n", "a malformed pax record at byte 0"),
    (b"99 path=x\n", "a malformed pax record at byte 0"),  # longer than the header
])  # fmt: skip
def test_a_malformed_or_backtracking_pax_header_is_refused(pax: bytes, why: str) -> None:
    with pytest.raises(tarfile.ReadError, match=why):
        _names(_archive(pax))
