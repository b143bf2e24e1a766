"""The per-sandbox ext4 image that holds the writable layer and caps its size."""

from __future__ import annotations

import os
import time
from pathlib import Path

from cove.errors import RuntimeBackendError
from cove.runner.host import mountapi
from cove.runner.host.proc import run

GIB = 1024**3
# The image is a fresh sparse file, so unwritten blocks already read as zero:
# lazy inode-table and journal initialisation are safe, and nodiscard skips a
# pointless punch-hole pass. No reserved blocks: the cap is exactly ``disk`` GiB.
MKFS_OPTIONS = ("-q", "-F", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard")
# On the host the layer is data, never programs: nosuid, nodev, noexec.
MOUNT_ATTRS = (mountapi.ATTR_NOSUID | mountapi.ATTR_NODEV | mountapi.ATTR_NOEXEC
               | mountapi.ATTR_NOATIME)  # fmt: skip
MOUNT_OPTIONS: tuple[tuple[str, str | None], ...] = (("noinit_itable", None),
                                                     ("errors", "remount-ro"))


def create_image(image: Path, size_gib: int, *, root_owner: tuple[int, int] = (0, 0)) -> None:
    """Make a sparse ext4 image of ``size_gib`` GiB at ``image`` (replacing it), its
    root directory owned by ``root_owner``.

    Raises:
        RuntimeBackendError: the file or file system could not be made.
    """
    try:
        with open(image, "wb") as f:
            f.truncate(size_gib * GIB)
    except OSError as exc:
        raise RuntimeBackendError(f"cannot create {image}: {exc}") from exc
    options = [*MKFS_OPTIONS]
    if root_owner != (0, 0):
        options[-1] += ",root_owner={}:{}".format(*root_owner)
    run(["mkfs.ext4", *options, "-L", "cove", str(image)], timeout=120)
    _drop_cache(image)


def _drop_cache(image: Path) -> None:
    """Forget what mkfs left of the image in the page cache (mkfs synced it): the loop
    device reads it with direct I/O, so those pages would only take memory."""
    try:
        fd = os.open(image, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def mount(image: Path, target: Path) -> None:
    """Mount ``image`` (opened without following a symlink) at ``target`` through a
    loop device freed on unmount: nosuid, nodev, noexec."""
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RuntimeBackendError(f"cannot create {target}: {exc}") from exc
    mountapi.mount_image(image, target, attrs=MOUNT_ATTRS, options=MOUNT_OPTIONS)


def wait_released(device: int, image: Path, timeout: float = 75.0) -> None:
    """Return once the loop device ``device`` (``st_dev`` of the image's mount) no
    longer serves ``image``: its file system is gone from every mount namespace.

    A crun call that started while the sandbox ran holds a copy of its mounts
    (see ``oci/crun.py``) until it ends; the image must not be mounted again, or
    checked or resized, before that copy is gone (two ext4 instances on one file).

    Raises:
        RuntimeBackendError: still in use after ``timeout`` seconds (longer than a
            crun call may take).
    """
    backing = Path(f"/sys/dev/block/{os.major(device)}:{os.minor(device)}/loop/backing_file")
    deadline = time.monotonic() + timeout
    delay = 0.001
    while _backs(backing, image):
        if time.monotonic() > deadline:
            raise RuntimeBackendError(f"{image} is still in use after unmount")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _backs(backing: Path, image: Path) -> bool:
    try:
        return backing.read_text().rstrip("\n") == os.path.realpath(image)
    except OSError:  # the device is gone (detached): not a loop device, or freed
        return False


def usage(mountpoint: Path) -> tuple[int, int]:
    """Bytes in use and the size of the file system mounted at ``mountpoint``
    (``(0, 0)`` when nothing can be said of it)."""
    try:
        st = os.statvfs(mountpoint)
    except OSError:
        return 0, 0
    return (st.f_blocks - st.f_bfree) * st.f_frsize, st.f_blocks * st.f_frsize


def size_gib(image: Path) -> float:
    """Apparent size of the image file in GiB."""
    try:
        return image.stat().st_size / GIB
    except OSError as exc:
        raise RuntimeBackendError(f"cannot stat {image}: {exc}") from exc


def resize(image: Path, new_gib: int) -> None:
    """Grow or shrink an unmounted image's file system to ``new_gib`` GiB.

    A shrink below what the file system needs fails before anything changes.

    Raises:
        RuntimeBackendError: the check, the size or the resize failed.
    """
    new_bytes = new_gib * GIB
    current = int(size_gib(image) * GIB)
    if new_bytes == current:
        return
    _check(image)
    if new_bytes < current:
        _ensure_fits(image, new_bytes)
        run(["resize2fs", str(image), f"{new_bytes // 1024}K"], timeout=600)
        _truncate(image, new_bytes)
    else:
        _truncate(image, new_bytes)
        run(["resize2fs", str(image)], timeout=600)


def _check(image: Path) -> None:
    done = run(["e2fsck", "-f", "-p", str(image)], check=False, timeout=600)
    if done.returncode not in (0, 1):  # 1: errors corrected
        raise RuntimeBackendError(f"e2fsck {image} exited {done.returncode}")


def _ensure_fits(image: Path, new_bytes: int) -> None:
    out = run(["dumpe2fs", "-h", str(image)]).stdout.decode()
    block = int(_field(out, "Block size"))
    minimum = run(["resize2fs", "-P", str(image)]).stdout.decode()
    blocks = int(minimum.strip().rsplit(":", 1)[-1])
    if blocks * block > new_bytes:
        need = blocks * block / GIB
        raise RuntimeBackendError(f"disk cannot shrink below {need:.2f} GiB (data in use)")


def _field(dump: str, name: str) -> str:
    for line in dump.splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    raise RuntimeBackendError(f"dumpe2fs: no {name}")


def _truncate(image: Path, size: int) -> None:
    try:
        os.truncate(image, size)
    except OSError as exc:
        raise RuntimeBackendError(f"cannot resize {image}: {exc}") from exc
