"""An image's size is read from its layers before anything is unpacked: what a hostile
layer claims or compresses away never gets past COVE_MAX_IMAGE_MB."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import tarfile
import threading
import time
import tracemalloc
import zlib
from pathlib import Path

import pytest

from cove.core.config import Settings
from cove.core.ports import RegistryAuth
from cove.errors import RuntimeBackendError
from cove.runner.storage import layers, registry
from cove.runner.storage.snapshot import stream
from tests.registry import (
    EndlessLayerRegistry,
    ImageSpec,
    Registry,
    entry,
    file,
    header_bomb,
    layer,
    layout,
    sparse_map_bomb,
)

MIB = 2**20


def _image(tmp_path: Path, *blobs: bytes) -> Path:
    return layout(tmp_path / "img", ImageSpec(list(blobs)))


def test_a_layer_bomb_is_refused_by_its_unpacked_size(tmp_path: Path) -> None:
    bomb = layer([file("zeros", bytes(50 * MIB))])
    where = _image(tmp_path, bomb)
    assert len(bomb) < MIB
    assert layers.check_compressed(where, "v1", 10 * MIB, "bomb") == len(bomb)
    with pytest.raises(layers.ImageTooLarge, match=r"bomb is larger than COVE_MAX_IMAGE_MB "
                                                   r"\(10 MiB\) unpacked"):  # fmt: skip
        layers.check_unpacked(where, "v1", 10 * MIB, "bomb")
    assert layers.check_unpacked(where, "v1", 60 * MIB, "bomb") > 50 * MIB


def test_the_layers_add_up(tmp_path: Path) -> None:
    where = _image(tmp_path, layer([file("a", bytes(3 * MIB))]), layer([file("b", bytes(3 * MIB))]))
    with pytest.raises(layers.ImageTooLarge):
        layers.check_unpacked(where, "v1", 5 * MIB, "two")


def test_an_image_of_countless_empty_files_is_refused_by_their_number(tmp_path: Path) -> None:
    """Each file takes one of the inodes of the host's file system (shared by everything
    on it) whatever its size: 20,000 empty files are 120 KiB compressed, pass a cap of
    10 MiB by their size (a block each), and would take 20,000 inodes. An image may make
    one per 16 KiB of the cap (10 MiB: 640); hard links and whiteouts make none."""
    many = layer([entry("d", tarfile.DIRTYPE), *(file(f"d/{n}") for n in range(20_000))])
    assert len(many) < MIB / 4
    where = _image(tmp_path, many)
    with pytest.raises(layers.ImageTooLarge, match=r"many has more than 640 files "
                                                   r"\(COVE_MAX_IMAGE_MB \(10 MiB\) allows one "
                                                   r"per 16 KiB\)"):  # fmt: skip
        layers.check_unpacked(where, "v1", 10 * MIB, "many")
    fits = [entry("d", tarfile.DIRTYPE), *(file(f"d/{n}") for n in range(639))]
    fits += [entry(f"d/link{n}", tarfile.LNKTYPE, target="d/0") for n in range(1000)]
    fits += [file(f"d/.wh.gone{n}") for n in range(1000)]
    assert layers.check_unpacked(_image(tmp_path / "fits", layer(fits)), "v1", 10 * MIB, "fits")


def test_compressed_size_over_the_cap(tmp_path: Path) -> None:
    where = _image(tmp_path, layer([file("a", b"x")]))
    with pytest.raises(layers.ImageTooLarge, match="its layers take 1 MiB compressed"):
        layers.check_compressed(where, "v1", 10, "small")


def test_a_sparse_file_counts_at_its_full_size(tmp_path: Path) -> None:
    """GNU sparse members: a few bytes stored, a terabyte written by an unpacker."""
    big = tmp_path / "sparse"
    with open(big, "wb") as f:
        f.truncate(2**40)
    tar = tmp_path / "sparse.tar"
    subprocess.run(["tar", "--sparse", "-cf", str(tar), "-C", str(tmp_path), "sparse"], check=True)
    assert tar.stat().st_size < MIB
    where = _image(tmp_path, gzip.compress(tar.read_bytes()))
    with pytest.raises(layers.ImageTooLarge):
        layers.check_unpacked(where, "v1", 100 * MIB, "sparse")


def test_zstd_layers_are_measured_too(tmp_path: Path) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("zeros")
        info.size = 20 * MIB
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    packed = subprocess.run(["zstd", "-q", "-c"], input=raw.getvalue(), capture_output=True,
                            check=True).stdout  # fmt: skip
    where = _image(tmp_path, gzip.compress(b""))  # (a layout; its layer is replaced below)
    _replace_layer(where, packed, "application/vnd.oci.image.layer.v1.tar+zstd")
    with pytest.raises(layers.ImageTooLarge):
        layers.check_unpacked(where, "v1", 10 * MIB, "zstd")


def _replace_layer(where: Path, data: bytes, media_type: str) -> None:
    """Make the one layer of the layout ``where`` ``data``, of ``media_type`` (its blob
    and its manifest rewritten in place: nothing here checks their digests)."""
    path = layers.blob(where, layers.manifest_descriptor(where, "v1")["digest"])
    manifest = json.loads(path.read_text())
    manifest["layers"][0]["mediaType"] = media_type
    path.write_text(json.dumps(manifest))
    layers.blob(where, manifest["layers"][0]["digest"]).write_bytes(data)


def _raw_tar(members: list, *, end: bool = True) -> bytes:
    """An uncompressed tar of ``members`` (without its end-of-archive blocks unless ``end``)."""
    raw = io.BytesIO()
    tar = tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT)
    for info, data in members:
        tar.addfile(info, io.BytesIO(data) if data is not None else None)
    if end:
        tar.close()
    return raw.getvalue()


def test_every_gzip_member_of_a_layer_counts(tmp_path: Path) -> None:
    """umoci reads a gzip layer to its last member (as Go does); tarfile's own gzip
    stopped after the first: a first member of one small file and a second of 50 MiB
    of zeros were counted as 1 KiB and unpacked whole."""
    first = gzip.compress(_raw_tar([file("innocent", b"hi\n")], end=False), mtime=0)
    second = gzip.compress(_raw_tar([file("zeros", bytes(50 * MIB))]), mtime=0)
    where = _image(tmp_path, first + second)
    with pytest.raises(layers.ImageTooLarge, match=r"two is larger than"):
        layers.check_unpacked(where, "v1", 10 * MIB, "two")


def test_a_layer_is_read_as_its_media_type_says(tmp_path: Path) -> None:
    """A plain tar whose first header is also a gzip header (its FNAME running to the
    header's end): tarfile's guess read it as gzip and counted what that held (one
    small file); umoci, told it is a tar, unpacks the 5,000 files after it."""
    inner = _raw_tar([file("innocent", b"hi\n")])
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    deflated = packer.compress(inner) + packer.flush()
    deflated += struct.pack("<II", zlib.crc32(inner), len(inner))
    head = bytearray(b"a" * 512)  # a V7 header: no magic, no NUL before byte 511
    head[0:10] = b"\x1f\x8b\x08\x08AAAAAA"  # gzip, deflate, FNAME
    head[100:124] = b"0000644 0000000 0000000 "
    head[124:148] = b"%011o 00000000000 " % len(deflated)
    head[156:157], head[329:345], head[511] = b"0", b"0000000 0000000 ", 0  # (devices)
    head[148:156] = b" " * 8
    head[148:156] = b"%07o " % sum(head)
    many = _raw_tar([file(f"many/{n}") for n in range(5000)])
    both = bytes(head) + deflated + bytes(-len(deflated) % 512) + many
    assert tarfile.open(fileobj=io.BytesIO(both), mode="r|*").getnames() == ["innocent"]
    where = _image(tmp_path, gzip.compress(b""))  # (a layout; its layer is replaced below)
    _replace_layer(where, both, "application/vnd.oci.image.layer.v1.tar")
    with pytest.raises(layers.ImageTooLarge, match=r"both has more than 64 files"):
        layers.check_unpacked(where, "v1", MIB, "both")


def test_a_layer_that_is_no_tar_is_an_error(tmp_path: Path) -> None:
    where = _image(tmp_path, gzip.compress(b"not a tar at all" * 100))
    with pytest.raises(RuntimeBackendError, match="not a valid tar"):
        layers.check_unpacked(where, "v1", MIB, "junk")


@pytest.mark.parametrize(("image", "repository"), [
    ("docker.io/library/python:3.12", "docker.io/library/python"),
    ("127.0.0.1:5000/a/b:v1", "127.0.0.1:5000/a/b"),
    ("127.0.0.1:5000/a/b@sha256:" + "a" * 64, "127.0.0.1:5000/a/b"),
])  # fmt: skip
def test_an_index_entry_is_fetched_from_the_images_repository(image: str, repository: str) -> None:
    assert registry._repository(image) == repository


def test_the_index_entry_of_this_platform_is_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry.platform, "machine", lambda: "x86_64")
    entries = [{"platform": {"os": "linux", "architecture": "arm64"}, "digest": "sha256:a"},
               {"platform": {"os": "windows", "architecture": "amd64"}, "digest": "sha256:b"},
               "junk", {"platform": "junk"},
               {"platform": {"os": "linux", "architecture": "amd64"}, "digest": "sha256:c"}]
    assert registry._platform_digest(entries) == "sha256:c"
    assert registry._platform_digest(entries[:2]) is None


def test_an_endless_output_line_is_cut_short() -> None:
    """skopeo prints a registry's error message whole, on one line (the registry is a
    tenant's): a pull's progress and its error keep the line's first 8 KiB."""
    said: list[str] = []
    endless = "head -c 50000000 /dev/zero | tr '\\0' M; echo; echo done; exit 3"
    with pytest.raises(RuntimeBackendError) as caught:
        stream(["sh", "-c", endless], said.append, name="tool")
    assert said == ["M" * 8192 + " [... 49991808 more bytes left out]", "done"]
    assert caught.value.message.startswith("tool exited 3: MMM")
    assert len(caught.value.message) < 9000
    fatal = 'time="x" level=fatal msg="reading manifest: manifest unknown: MMM [... 9 more'
    assert registry._reason(fatal) == "reading manifest: manifest unknown: MMM [... 9 more"


@pytest.mark.parametrize("kind", [tarfile.XHDTYPE, tarfile.GNUTYPE_LONGNAME])
def test_an_extended_header_bomb_is_refused_before_it_is_read(tmp_path: Path, kind: bytes) -> None:
    """One pax header (or GNU long name) of 64 MiB gzips to 64 KiB; tarfile would read it
    whole into memory (twice) before any member's size is counted."""
    raw = header_bomb(tmp_path / "bomb.tar", 64 * MIB, kind)
    where = _image(tmp_path, gzip.compress(b""))  # (a layout; its layer is replaced below)
    blob = layers.blob(where, layers.manifest(where, "v1")["layers"][0]["digest"])
    with raw.open("rb") as src, gzip.open(blob, "wb") as dst:
        shutil.copyfileobj(src, dst, MIB)
    assert _peak_refused(where, 10 * MIB, "extended header of 67108864 bytes") < 8 * MIB


def test_a_layer_that_never_ends_is_cut_off_at_the_limit(tmp_path: Path) -> None:
    """The registry announces a 1 KiB layer and sends an endless one: skopeo checks the
    size and digest only at its end, so the host's disk would fill until the pull's
    timeout. The download is stopped once it passes COVE_MAX_IMAGE_MB."""
    settings = Settings(data_dir=tmp_path, snapshot_dir=tmp_path / "snapshots",
                        max_image_mb=64, insecure_registries=["127.0.0.1"],
                        pull_timeout_seconds=300)  # fmt: skip
    with EndlessLayerRegistry() as hostile:
        started = time.monotonic()
        with pytest.raises(layers.ImageTooLarge, match=r"\(64 MiB\): the download passed it"):
            registry.pull(settings, "endless", f"{hostile.host}/x:v1", None)
        assert time.monotonic() - started < 60
        assert hostile.served > 64 * MIB
    left = sum(f.stat().st_size for f in (tmp_path / "snapshots").rglob("*") if f.is_file())
    assert left < MIB
    assert not (tmp_path / "snapshots" / "endless").exists()


def test_a_cancelled_pull_is_stopped_at_once_and_leaves_nothing(tmp_path: Path) -> None:
    """A pull whose snapshot was deleted (its ``cancel`` set) kills its skopeo within a
    second, though its registry sends for ever: it does not run on, up to
    COVE_MAX_IMAGE_MB and COVE_PULL_TIMEOUT_SECONDS, for a snapshot nobody has."""
    settings = Settings(data_dir=tmp_path, snapshot_dir=tmp_path / "snapshots",
                        insecure_registries=["127.0.0.1"], pull_timeout_seconds=300)  # fmt: skip
    cancel = threading.Event()
    with EndlessLayerRegistry() as hostile:
        image = f"{hostile.host}/x:v1"
        ended: list[BaseException] = []

        def pull() -> None:
            try:
                registry.pull(settings, "endless", image, None, cancel=cancel)
            except BaseException as exc:  # noqa: BLE001 - the test looks at it
                ended.append(exc)

        puller = threading.Thread(target=pull)
        puller.start()
        while hostile.served < 8 * MIB:
            time.sleep(0.05)
        cancel.set()
        puller.join(5)
        assert not puller.is_alive()
        assert isinstance(ended[0], RuntimeBackendError) and "cancelled" in str(ended[0])
        assert not [pid for pid in os.listdir("/proc") if pid.isdigit()
                    and image.encode() in _cmdline(pid)]  # fmt: skip
    left = sum(f.stat().st_size for f in (tmp_path / "snapshots").rglob("*") if f.is_file())
    assert left < MIB
    assert not (tmp_path / "snapshots" / "endless").exists()


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_only_the_blobs_a_pull_copies_count_against_it(tmp_path: Path) -> None:
    """Other pulls' new blobs land in the same shared directory meanwhile."""
    work, blobs = tmp_path / "work", tmp_path / "blobs"
    (blobs / "sha256").mkdir(parents=True)
    work.mkdir()
    theirs, mine = "a" * 64, "b" * 64
    for name in (theirs, mine):
        with open(blobs / "sha256" / name, "wb") as f:
            f.truncate(64 * MIB)  # (a hole: no disk taken)
    lines: list[str] = []
    download = registry._Download("img", work, blobs, set(), 32 * MIB, lines.append)
    assert download.over() is None
    download.heard(f"Copying blob sha256:{mine}")
    assert lines == [f"Copying blob sha256:{mine}"]
    assert isinstance(download.over(), layers.ImageTooLarge)


def test_a_sparse_map_bomb_is_cut_off(tmp_path: Path) -> None:
    """An old-GNU sparse member of size 0 whose map goes on (24 MiB of extended blocks,
    gzipped to 80 KiB): tarfile keeps every entry in a list before the member is seen."""
    where = _image(tmp_path, gzip.compress(sparse_map_bomb(48_000)))
    peak = _peak_refused(where, 100 * MIB, "a member's headers take more than")
    assert peak < 40 * MIB  # (a million entries, unbounded: over 100 MiB)


def _peak_refused(where: Path, limit: int, reason: str) -> int:
    """The memory ``check_unpacked`` took at its peak to refuse the image for ``reason``."""
    tracemalloc.start()
    try:
        with pytest.raises(RuntimeBackendError, match=reason):
            layers.check_unpacked(where, "v1", limit, "bomb")
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_private_layer_is_reused_only_with_the_credentials_that_fetched_it(
    tmp_path: Path,
) -> None:  # fmt: skip
    """An organization pulls its private image (with its credentials); another names
    that image's layer by digest in a manifest of its own registry, which lacks the
    blob: skopeo would take the layer from a shared cache without asking that registry.
    The pull fails instead: the blob is not there for a pull without those credentials."""
    settings = Settings(data_dir=tmp_path, snapshot_dir=tmp_path / "snapshots",
                        insecure_registries=["127.0.0.1"], pull_timeout_seconds=300)  # fmt: skip
    secret = layer([file("secret.txt", b"the private layer's content")])
    image = _image(tmp_path, secret)
    (tmp_path / "private").mkdir()
    (tmp_path / "hostile").mkdir()
    private = Registry(tmp_path / "private", user="alice", password="s3cret-pw").start()
    hostile = Registry(tmp_path / "hostile").start()
    try:
        mine = private.push(image, "app")
        theirs = hostile.push(image, "copy")
        digest = hashlib.sha256(secret).hexdigest()
        for data in (tmp_path / "hostile/data").rglob(f"blobs/sha256/{digest[:2]}/{digest}/data"):
            data.unlink()  # (it serves the manifest, not the layer)
        auth = RegistryAuth(private.host, "alice", "s3cret-pw")
        pulled = registry.pull(settings, "mine", mine, auth)
        assert pulled.digest
        with pytest.raises(RuntimeBackendError):
            registry.pull(settings, "theirs", theirs, None)
        assert not (tmp_path / "snapshots" / "theirs").exists()
        # The same credentials find it again (not downloaded twice).
        assert registry.pull(settings, "again", mine, auth).digest == pulled.digest
    finally:
        private.stop()
        hostile.stop()
