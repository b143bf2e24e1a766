"""The size of an image before it is unpacked: what its layers hold, counted from the
layers themselves (hostile input: a small compressed layer may unpack to terabytes).

Each layer's tar stream is read once, decompressed on the fly (gzip, bzip2, xz by
the standard library, zstd through ``zstd -dc``), and the sizes of its files are
added up: regular files at their full size (a sparse file's holes count, as an
unpacker writes them), every other entry at one block. Reading stops as soon as the
total passes the limit, so a bomb costs no more than the limit's worth of work; an
extended header over 1 MiB (which tarfile would read whole into memory) is refused
before it is read (:mod:`cove.core.tarheaders`).
"""

from __future__ import annotations

import subprocess
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from cove.core.tarheaders import TarInfo
from cove.errors import RuntimeBackendError
from cove.runner.storage.unpack import blob, manifest, manifest_descriptor

BLOCK = 512
_ZSTD = b"\x28\xb5\x2f\xfd"


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
        ImageTooLarge: they pass ``limit`` bytes (counting stopped there).
        RuntimeBackendError: a layer is not a valid (compressed) tar stream.
    """
    total = 0
    for layer in manifest(layout, tag).get("layers") or []:
        with _opened(blob(layout, layer.get("digest"))) as stream:
            try:
                with tarfile.open(fileobj=stream, mode="r|*", tarinfo=TarInfo) as tar:
                    for member in tar:
                        total += _cost(member)
                        if total > limit:
                            raise ImageTooLarge(
                                f"{image} is larger than COVE_MAX_IMAGE_MB "
                                f"({limit // 2**20} MiB) unpacked")  # fmt: skip
            except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
                raise RuntimeBackendError(f"{image}: a layer is not a valid tar: {exc}") from exc
    return total


def _cost(member: tarfile.TarInfo) -> int:
    if member.isreg():
        return BLOCK + max(0, member.size)
    return BLOCK


@contextmanager
def _opened(path: Path) -> Iterator[IO[bytes]]:
    """The layer at ``path`` as a stream; zstd is decompressed by ``zstd`` (the standard
    library's tarfile does gzip, bzip2 and xz)."""
    with open(path, "rb") as f:
        if f.read(4) != _ZSTD:
            f.seek(0)
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
