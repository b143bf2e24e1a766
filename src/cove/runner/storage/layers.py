"""The size of an image before it is unpacked: what its layers hold, counted from the
layers themselves (hostile input: a small compressed layer may unpack to terabytes).

Each layer's tar stream is read once, decompressed on the fly as its media type says
(gzip by the standard library, every member of it; zstd through ``zstd -dc``; else
none), and the sizes of its files are added up: regular files at their full size (a
sparse file's holes count, as an unpacker writes them), every other entry at one
block. Reading stops as soon as the total passes the limit, so a bomb costs no more
than the limit's worth of work; an extended header over 1 MiB (which tarfile would
read whole into memory) is refused before it is read (:mod:`cove.core.tarheaders`).

A layer is read as ``umoci`` will unpack it, never by what its bytes look like:
umoci follows the media type and reads a gzip stream to its last member (as Go
does), while tarfile's own decompression guesses from the first bytes and stops
after the first member. A layer of two gzip members, or a tar whose first header is
also a gzip header, was counted small and unpacked whole.

The files are counted too: each one unpacked takes an inode of the host's file system
holding the snapshots, shared by everything on it, whatever its size (a layer of
millions of empty files is a few MiB, and a snapshot of them measures next to
nothing). An image may make one file per :data:`INODE_SHARE` bytes of the limit, as
many as a file system of that size has (``mkfs.ext4``'s default, as on the sandboxes'
disks): 655,360 with the default COVE_MAX_IMAGE_MB. Hard links and whiteouts make none.
"""

from __future__ import annotations

import gzip
import posixpath
import subprocess
import tarfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, cast

from cove.core.tarheaders import TarInfo
from cove.errors import RuntimeBackendError
from cove.runner.storage.unpack import blob, manifest, manifest_descriptor

BLOCK = 512
INODE_SHARE = 16 * 1024  # bytes of the limit per file an image may make
WHITEOUT = ".wh."


class ImageTooLarge(RuntimeBackendError):
    """An image over COVE_MAX_IMAGE_MB."""


def digests(layout: Path, tag: str) -> list[str]:
    """The digests of the blobs image ``tag`` consists of (manifest, config, layers)."""
    found = manifest(layout, tag)
    parts = [found.get("config") or {}, *(found.get("layers") or [])]
    own = manifest_descriptor(layout, tag).get("digest")
    return [d for d in [own, *(p.get("digest") for p in parts)] if isinstance(d, str)]


def check_compressed(layout: Path, tag: str, limit: int, image: str) -> int:
    """The bytes of image ``tag``'s layers as stored (its manifest's sizes, which the
    download verified).

    Raises:
        ImageTooLarge: they pass ``limit`` bytes.
    """
    total = compressed_size(manifest(layout, tag))
    refuse_compressed(total, limit, image)
    return total


def compressed_size(found: dict[str, object]) -> int:
    """What the layers of the manifest ``found`` say they take."""
    layers = found.get("layers")
    sizes = [layer.get("size") for layer in layers if isinstance(layer, dict)] \
        if isinstance(layers, list) else []
    return sum(size for size in sizes if isinstance(size, int) and size > 0)


def refuse_compressed(total: int, limit: int, image: str) -> None:
    """Raises ImageTooLarge: ``total`` bytes of compressed layers pass ``limit``."""
    if total > limit:
        raise ImageTooLarge(f"{image} is larger than COVE_MAX_IMAGE_MB ({limit // 2**20} MiB): "
                            f"its layers take {_mib(total)} MiB compressed")  # fmt: skip


def check_unpacked(layout: Path, tag: str, limit: int, image: str) -> int:
    """The bytes image ``tag``'s files take unpacked, all layers together.

    Raises:
        ImageTooLarge: they pass ``limit`` bytes, or they are more files than one per
            :data:`INODE_SHARE` bytes of it (counting stopped there).
        RuntimeBackendError: a layer is not a valid (compressed) tar stream.
    """
    total = files = 0
    most = limit // INODE_SHARE
    for layer in manifest(layout, tag).get("layers") or []:
        with _opened(blob(layout, layer.get("digest")), layer.get("mediaType")) as stream:
            try:
                with tarfile.open(fileobj=stream, mode="r|", tarinfo=TarInfo) as tar:
                    for member in tar:
                        total += _cost(member)
                        files += _makes_inode(member)
                        if total > limit:
                            raise ImageTooLarge(
                                f"{image} is larger than COVE_MAX_IMAGE_MB "
                                f"({limit // 2**20} MiB) unpacked")  # fmt: skip
                        if files > most:
                            raise ImageTooLarge(
                                f"{image} has more than {most} files (COVE_MAX_IMAGE_MB "
                                f"({limit // 2**20} MiB) allows one per "
                                f"{INODE_SHARE // 1024} KiB)")  # fmt: skip
            except (tarfile.TarError, OSError, EOFError, ValueError, zlib.error) as exc:
                raise RuntimeBackendError(f"{image}: a layer is not a valid tar: {exc}") from exc
    return total


def _cost(member: tarfile.TarInfo) -> int:
    if member.isreg():
        return BLOCK + max(0, member.size)
    return BLOCK


def _makes_inode(member: tarfile.TarInfo) -> bool:
    """Whether unpacking ``member`` makes a file (not a hard link, nor a whiteout)."""
    return not member.islnk() and not posixpath.basename(member.name).startswith(WHITEOUT)


@contextmanager
def _opened(path: Path, media_type: object) -> Iterator[IO[bytes]]:
    """The tar stream of the layer at ``path`` of ``media_type``, decompressed as
    umoci does: gzip (OCI's ``+gzip``, Docker's ``.tar.gzip``) whole, every member;
    zstd by ``zstd``; any other type not at all (a compressed layer of a type umoci
    does not know is then no valid tar, and refused)."""
    kind = media_type if isinstance(media_type, str) else ""
    if not kind.endswith("zstd"):
        with open(path, "rb") as f:
            if kind.endswith("gzip"):
                with gzip.GzipFile(fileobj=f, mode="rb") as unzipped:
                    yield cast(IO[bytes], unzipped)
            else:
                yield f
        return
    proc = subprocess.Popen(["zstd", "-dcq", "--", str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    assert proc.stdout is not None
    try:
        yield proc.stdout
    finally:
        proc.kill()
        proc.stdout.close()
        proc.wait()


def _mib(size: int) -> int:
    return -(-size // 2**20)
