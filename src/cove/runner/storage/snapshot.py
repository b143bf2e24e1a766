"""Read-only snapshot root filesystems, and the builder of the default one.

Layout under ``settings.snapshot_dir``::

    <name>/<dir>/rootfs      a finished root filesystem (never modified)
    <name>/<dir>/recipe.json the recipe it was built from
    <name>/current           symlink to the <dir> in use
    <name>/.build-*          work in progress (never looks finished)

``<dir>`` is the recipe's hash, so a changed recipe builds a new directory
while sandboxes created earlier keep the lower directory they were made over.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from cove.core.config import Settings
from cove.errors import RuntimeBackendError
from cove.runner.host import mounts
from cove.runner.host.proc import run

RECIPE_VERSION = 1
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = (
    "bash", "ca-certificates", "curl", "git", "iproute2", "less", "mount", "passwd", "procps",
    "python-is-python3", "python3", "python3-pip", "python3-venv", "unzip", "xz-utils",
)  # fmt: skip
# Computer use (agent/computer.py): X display, window manager, VNC + noVNC, input, screenshots.
DESKTOP_PACKAGES = (
    "matchbox-window-manager", "novnc", "python3-pil", "x11-utils", "x11vnc", "xdotool",
    "xfonts-base", "xterm", "xvfb",
)  # fmt: skip
POST_BUILD = """\
set -e
groupadd --gid 1000 daytona
useradd --uid 1000 --gid 1000 --home-dir /home/daytona --create-home \
    --shell /bin/bash daytona
# Node.js and a TypeScript runner for code_run (debootstrap cannot resolve npm's
# dependency tree itself; apt can). The registries are reachable at build time only.
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends nodejs npm python3-pylsp
apt-get install -y -qq --no-install-recommends """ + " ".join(DESKTOP_PACKAGES) + """
# Trust what the host trusts for the registry (e.g. a TLS-inspecting proxy's CA).
[ -f /tmp/cove-host-ca.crt ] && export NODE_EXTRA_CA_CERTS=/tmp/cove-host-ca.crt
npm install --global --no-audit --no-fund --loglevel=error tsx@4 typescript@5 \
    typescript-language-server@4
rm -rf /root/.npm /root/.cache
echo sandbox > /etc/hostname
printf '127.0.0.1\\tlocalhost\\n::1\\tlocalhost ip6-localhost ip6-loopback\\n' > /etc/hosts
: > /etc/resolv.conf
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/*.log /tmp/* /var/tmp/*
rm -f /etc/machine-id /var/lib/dbus/machine-id
"""

Progress = Callable[[str], None]


def recipe() -> dict[str, object]:
    """The inputs of the default snapshot; any change gives a new hash."""
    return {
        "version": RECIPE_VERSION,
        "suite": SUITE,
        "mirror": MIRROR,
        "packages": sorted(PACKAGES),
        "post_build": POST_BUILD,
    }


def recipe_hash() -> str:
    """Short stable hash of :func:`recipe`."""
    blob = json.dumps(recipe(), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def snapshot_rootfs(settings: Settings, name: str) -> Path:
    """The resolved root filesystem of snapshot ``name`` (it may not exist).

    Args:
        settings: Server settings (``snapshot_dir`` is used).
        name: Snapshot name.

    Returns:
        ``<snapshot_dir>/<name>/<dir>/rootfs`` with the ``current`` pointer
        resolved, or ``<snapshot_dir>/<name>/rootfs`` for a snapshot placed by hand.
    """
    base = _snapshot_dir(settings) / name
    current = base / "current"
    if name == settings.default_snapshot and (base / recipe_hash() / "rootfs").is_dir():
        return base / recipe_hash() / "rootfs"  # this recipe's build (servers may differ)
    if current.is_symlink():
        return (base / os.readlink(current)).resolve() / "rootfs"
    return base / "rootfs"


def ensure_default_snapshot(
    settings: Settings, *, force: bool = False, progress: Progress | None = None
) -> Path:
    """Build the default Debian snapshot unless an up-to-date one exists.

    Args:
        settings: Server settings (``snapshot_dir`` and ``default_snapshot``).
        force: Build again even when the current one matches the recipe.
        progress: Receives one line of build output at a time.

    Returns:
        The root filesystem directory of the current default snapshot.

    Raises:
        RuntimeBackendError: the build failed; nothing that looks finished is left.
    """
    say = progress or (lambda _line: None)
    base = _snapshot_dir(settings) / settings.default_snapshot
    try:
        base.mkdir(parents=True, exist_ok=True)
        with _locked(base):
            if not force and _is_current(base):
                return snapshot_rootfs(settings, settings.default_snapshot)
            _remove_stale_builds(base)
            _build(base, say)
    except OSError as exc:
        raise RuntimeBackendError(f"snapshot build failed: {exc}") from exc
    return snapshot_rootfs(settings, settings.default_snapshot)


def _snapshot_dir(settings: Settings) -> Path:
    assert settings.snapshot_dir is not None
    return settings.snapshot_dir


def _is_current(base: Path) -> bool:
    if (base / recipe_hash() / "recipe.json").is_file():  # built (maybe not ``current``)
        return True
    current = base / "current"
    if not current.is_symlink():
        return False
    target = (base / os.readlink(current)).resolve()
    meta = target / "recipe.json"
    return meta.is_file() and json.loads(meta.read_text()).get("hash") == recipe_hash()


@contextmanager
def _locked(base: Path) -> Iterator[None]:
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _remove_stale_builds(base: Path) -> None:
    for stale in base.glob(".build-*"):
        _remove_tree(stale)


def _remove_tree(path: Path) -> None:
    """Remove a build tree, unmounting whatever debootstrap left mounted in it."""
    mounts.unmount_under(path)
    if mounts.mounted_under(path):
        raise RuntimeBackendError(f"cannot unmount everything under {path}")
    shutil.rmtree(path, ignore_errors=True)


def _build(base: Path, say: Progress) -> None:
    digest = recipe_hash()
    work = base / f".build-{digest}-{os.getpid()}"
    work.mkdir()
    try:
        rootfs = work / "rootfs"
        _debootstrap(rootfs, say)
        _post_build(rootfs, say)
        meta = {"hash": digest, "recipe": recipe(), "built_at": time.time()}
        (work / "recipe.json").write_text(json.dumps(meta, indent=2))
        final = base / digest
        if final.exists():
            final = base / f"{digest}-{time.time_ns()}"
        work.rename(final)
    except BaseException:
        _remove_tree(work)
        raise
    if not (base / "current").is_symlink():  # others may serve another recipe's build
        _point_current(base, final.name)
    say(f"snapshot ready: {final / 'rootfs'}")


def _point_current(base: Path, target: str) -> None:
    tmp = base / f".current-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    tmp.rename(base / "current")


def _debootstrap(rootfs: Path, say: Progress) -> None:
    argv = [
        "debootstrap", "--variant=minbase", f"--include={','.join(sorted(PACKAGES))}",
        SUITE, str(rootfs), MIRROR,
    ]  # fmt: skip
    stream(argv, say)


def _post_build(rootfs: Path, say: Progress) -> None:
    say("post-build: Node.js and a TypeScript runner, user daytona, cleaning caches")
    host_ca = Path(os.environ.get("NODE_EXTRA_CA_CERTS", "/etc/ssl/certs/ca-certificates.crt"))
    if host_ca.is_file():
        shutil.copyfile(host_ca, rootfs / "tmp" / "cove-host-ca.crt")
    run(["mount", "-t", "proc", "proc", str(rootfs / "proc")])  # npm needs /proc
    try:
        stream(["chroot", str(rootfs), "/bin/sh", "-c", POST_BUILD], say)
    finally:
        mounts.unmount(rootfs / "proc")


def stream(
    argv: list[str], say: Progress, *, env: dict[str, str] | None = None,
    timeout: float | None = None,
) -> None:  # fmt: skip
    """Run ``argv`` and hand each output line (stdout and stderr) to ``say``; it is
    killed after ``timeout`` seconds.

    Raises:
        RuntimeBackendError: it could not run, exited non-zero or timed out (the
            message ends with its last lines).
    """
    try:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=env,
        )  # fmt: skip
    except OSError as exc:
        raise RuntimeBackendError(f"{argv[0]} failed: {exc}") from exc
    assert proc.stdout is not None
    fired = threading.Event()

    def expire() -> None:
        fired.set()
        proc.kill()

    timer = threading.Timer(timeout, expire) if timeout is not None else None
    if timer is not None:
        timer.start()
    tail: list[str] = []
    try:
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            tail = (tail + [line])[-5:]
            say(line)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        if timer is not None:
            timer.cancel()
    code = proc.wait()
    if fired.is_set():
        raise RuntimeBackendError(f"{argv[0]} timed out after {timeout:.0f} s")
    if code != 0:
        raise RuntimeBackendError(f"{argv[0]} exited {code}: {' | '.join(tail)}")
