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
import shlex
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from cove.agent.artifacts import BACKEND_DIR
from cove.core.config import Settings
from cove.errors import RuntimeBackendError
from cove.runner.host import mounts
from cove.runner.host.proc import run
from cove.runner.storage import snapshot_gc

RECIPE_VERSION = 2
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# What goes into the default snapshot, one tuple per purpose: adding a package is one line.
# debootstrap installs BASE (it resolves only simple dependency trees); apt, pip and npm
# install the rest in the chroot, in that order (the registries are reachable at build
# time only). Python packages are pip wheels (there is no compiler) in /usr/local, where
# pip may upgrade them later.
BASE = (
    "bash", "ca-certificates", "curl", "git", "iproute2", "less", "mount", "passwd", "procps",
    "python-is-python3", "python3", "python3-pip", "python3-venv", "unzip", "xz-utils",
)  # fmt: skip
APT: dict[str, tuple[str, ...]] = {
    "node": ("nodejs", "npm"),  # node for code_run; npm's dependency tree needs apt
    "lsp": ("python3-pylsp",),  # the python language server (lsp/start)
    # computer use (agent/computer*.py): X display, window manager, VNC + noVNC, input,
    # screenshots, screen recordings (ffmpeg), the accessibility tree (AT-SPI: its bus,
    # the GTK bridge, pyatspi; GTK 3 for accessible apps)
    "desktop": ("at-spi2-core", "dbus-daemon", "ffmpeg", "gir1.2-gtk-3.0", "libatk-adaptor",
                "matchbox-window-manager", "novnc", "python3-pil", "python3-pyatspi",
                "x11-utils", "x11vnc", "xdotool", "xfonts-base", "xterm", "xvfb"),
}
PIP: dict[str, tuple[str, ...]] = {
    "data": ("numpy==2.4.6", "pandas==3.1.1", "matplotlib==3.11.2", "requests==2.34.2"),
}
NPM: dict[str, tuple[str, ...]] = {
    # (`ts-node -e` fails with typescript 5.6 and later: "Unexpected token 'export'")
    "typescript": ("tsx@4.23.15", "typescript@5.5.4", "ts-node@10.9.2", "@types/node@18.19.130"),
    "lsp": ("typescript-language-server@4",),
}
# Files of Cove's own placed in the snapshot: its path there, and its source here.
# cove_charts: the matplotlib backend that turns plt.show() into code_run's charts.
FILES: dict[str, Path] = {
    f"{BACKEND_DIR}/cove_charts.py": Path(__file__).parent / "sandbox_files" / "cove_charts.py",
}
# ({apt}, {pip}, {npm} are replaced by the lists above: write other braces doubled.)
POST_BUILD = """\
set -e
groupadd --gid 1000 daytona
useradd --uid 1000 --gid 1000 --home-dir /home/daytona --create-home \\
    --shell /bin/bash daytona
# pip installs for everyone (PEP 668 lifted: the marker is diverted, so that an upgrade of
# Python does not bring it back): root's go to /usr/local, other users' to ~/.local
# (first on their PATH, see the agent's users.py and ~/.profile).
for marker in /usr/lib/python3*/EXTERNALLY-MANAGED; do
    dpkg-divert --local --rename --divert "$marker.cove" --add "$marker"
done
install -d -o daytona -g daytona /home/daytona/.local /home/daytona/.local/bin
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends {apt}
# Trust what the host trusts for the registries (e.g. a TLS-inspecting proxy's CA).
if [ -f /tmp/cove-host-ca.crt ]; then
    export NODE_EXTRA_CA_CERTS=/tmp/cove-host-ca.crt PIP_CERT=/tmp/cove-host-ca.crt
fi
python3 -m pip install --no-cache-dir --root-user-action=ignore --disable-pip-version-check \\
    --progress-bar=off --only-binary=:all: {pip}
# (their own test suites: a tenth of the snapshot)
(cd /usr/local/lib/python3*/dist-packages
 rm -rf numpy/tests numpy/*/tests pandas/tests matplotlib/tests)
npm install --global --no-audit --no-fund --loglevel=error {npm}
rm -rf /root/.npm /root/.cache
echo sandbox > /etc/hostname
printf '127.0.0.1\\tlocalhost\\n::1\\tlocalhost ip6-localhost ip6-loopback\\n' > /etc/hosts
: > /etc/resolv.conf
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/*.log /tmp/* /var/tmp/*
rm -f /etc/machine-id /var/lib/dbus/machine-id
"""


def _words(lists: dict[str, tuple[str, ...]]) -> str:
    return " ".join(shlex.quote(word) for words in lists.values() for word in words)


def post_build_script() -> str:
    """The shell script run in the chroot after debootstrap."""
    return POST_BUILD.format(apt=_words(APT), pip=_words(PIP), npm=_words(NPM))


Progress = Callable[[str], None]


def recipe() -> dict[str, object]:
    """The inputs of the default snapshot; any change gives a new hash."""
    return {
        "version": RECIPE_VERSION,
        "suite": SUITE,
        "mirror": MIRROR,
        "packages": sorted(BASE),
        "post_build": post_build_script(),
        "files": {path: hashlib.sha256(source.read_bytes()).hexdigest()
                  for path, source in sorted(FILES.items())},
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

    A finished build of the same recipe is used again; builds that no sandbox of the
    host uses any more are removed (see :mod:`cove.runner.storage.snapshot_gc`).

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
            if force or not _reuse(base):  # (it points ``current`` at this recipe's build)
                _remove_stale_builds(base)
                _build(base, say)
            snapshot_gc.register(base, settings.data_dir)
            for name in snapshot_gc.safe_collect(base, settings.data_dir):
                say(f"removed old build {name} (no sandbox uses it)")
    except OSError as exc:
        raise RuntimeBackendError(f"snapshot build failed: {exc}") from exc
    return snapshot_rootfs(settings, settings.default_snapshot)


@contextmanager
def pinned(settings: Settings, name: str) -> Iterator[Path]:
    """The root filesystem of snapshot ``name`` (as :func:`snapshot_rootfs`), which the
    collector of old builds leaves alone until the block ends: record it as a
    sandbox's lower layer inside the block."""
    base = _snapshot_dir(settings) / name
    if not (base / "current").is_symlink():
        yield snapshot_rootfs(settings, name)
        return
    with snapshot_gc.pinned(base):
        yield snapshot_rootfs(settings, name)


def _snapshot_dir(settings: Settings) -> Path:
    assert settings.snapshot_dir is not None
    return settings.snapshot_dir


def _reuse(base: Path) -> bool:
    """Point ``current`` at a finished build of this recipe, if there is one."""
    digest = recipe_hash()
    for build in sorted(base.glob(f"{digest}*"), reverse=True):
        meta = build / "recipe.json"
        if meta.is_file() and json.loads(meta.read_text()).get("hash") == digest:
            if (build / "rootfs").is_dir():
                _point_current(base, build.name)
                return True
    return False


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
    _point_current(base, final.name)  # (the collector keeps what ``current`` names)
    say(f"snapshot ready: {final / 'rootfs'}")


def _point_current(base: Path, target: str) -> None:
    tmp = base / f".current-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    tmp.rename(base / "current")


def _debootstrap(rootfs: Path, say: Progress) -> None:
    argv = [
        "debootstrap", "--variant=minbase", f"--include={','.join(sorted(BASE))}",
        SUITE, str(rootfs), MIRROR,
    ]  # fmt: skip
    stream(argv, say)


def _post_build(rootfs: Path, say: Progress) -> None:
    say("post-build: user daytona, apt, pip and npm packages, cleaning caches")
    host_ca = Path(os.environ.get("NODE_EXTRA_CA_CERTS", "/etc/ssl/certs/ca-certificates.crt"))
    if host_ca.is_file():
        shutil.copyfile(host_ca, rootfs / "tmp" / "cove-host-ca.crt")
    _place_files(rootfs)
    run(["mount", "-t", "proc", "proc", str(rootfs / "proc")])  # npm needs /proc
    try:
        stream(["chroot", str(rootfs), "/bin/sh", "-c", post_build_script()], say,
               env=_chroot_env())
    finally:
        mounts.unmount(rootfs / "proc")


def _place_files(rootfs: Path) -> None:
    """Copy :data:`FILES` into the new root filesystem (root's, world-readable)."""
    for path, source in FILES.items():
        target = rootfs / path.lstrip("/")
        for parent in reversed(target.relative_to(rootfs).parents[:-1]):
            if not (rootfs / parent).is_dir():
                (rootfs / parent).mkdir()
                os.chmod(rootfs / parent, 0o755)
        shutil.copyfile(source, target)
        os.chmod(target, 0o644)


def _chroot_env() -> dict[str, str]:
    """The build's environment: none of the host's (its CA paths, say, name files the
    chroot lacks) but its proxy settings."""
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "HOME": "/root", "LANG": "C.UTF-8"}  # fmt: skip
    proxies = {k: v for k, v in os.environ.items() if k.lower().endswith("_proxy")}
    return env | proxies


WATCH_SECONDS = 0.5  # how often stream() asks its stop_when
MAX_LINE = 8 * 1024  # bytes of one output line stream() keeps


def stream(
    argv: list[str], say: Progress, *, env: dict[str, str] | None = None,
    timeout: float | None = None, stop_when: Callable[[], Exception | None] | None = None,
    name: str | None = None,
) -> None:  # fmt: skip
    """Run ``argv`` and hand each output line (stdout and stderr; its first
    :data:`MAX_LINE` bytes, see :func:`_lines`) to ``say``; it is killed after
    ``timeout`` seconds, or as soon as ``stop_when`` (asked each :data:`WATCH_SECONDS`)
    returns an error. Errors call it ``name`` (default: ``argv[0]``).

    Raises:
        RuntimeBackendError: it could not run, exited non-zero or timed out (the
            message ends with its last lines).
        Exception: what ``stop_when`` returned.
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
    done, stopped = threading.Event(), []

    def watch() -> None:
        assert stop_when is not None
        while not done.wait(WATCH_SECONDS):
            error = stop_when()
            if error is not None:
                stopped.append(error)
                proc.kill()
                return

    watcher = threading.Thread(target=watch, daemon=True) if stop_when is not None else None
    if watcher is not None:
        watcher.start()
    tail: list[str] = []
    try:
        for line in _lines(proc.stdout):
            tail = (tail + [line])[-5:]
            say(line)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        if timer is not None:
            timer.cancel()
        done.set()
        if watcher is not None:
            watcher.join()
    code = proc.wait()
    name = name or argv[0]
    if stopped:
        raise stopped[0]
    if fired.is_set():
        raise RuntimeBackendError(f"{name} timed out after {timeout:.0f} s")
    if code != 0:
        raise RuntimeBackendError(f"{name} exited {code}: {' | '.join(tail)}")


def _lines(out: IO[bytes]) -> Iterator[str]:
    """The lines of ``out``, each cut to :data:`MAX_LINE` bytes (and saying how many
    were left out). A tool's line may be as long as what it was sent: skopeo prints a
    registry's error message whole, and the registry is a tenant's. The rest of a long
    line is read and dropped, never held: the lines go to a build log, the last ones
    to the error a sandbox or snapshot keeps."""
    while raw := out.readline(MAX_LINE):
        left, ended = 0, raw.endswith(b"\n")
        while not ended and (more := out.readline(MAX_LINE)):
            ended = more.endswith(b"\n")
            left += len(more) - ended
        line = raw.decode(errors="replace").rstrip()
        yield f"{line} [... {left} more bytes left out]" if left else line
