"""Pulling images from OCI registries (Docker Hub, GHCR, any registry v2) into snapshots.

``skopeo copy docker://<image> oci:<pull dir>/layout:image`` fetches the image for
this host's platform; every blob (layers, config, manifest) goes to a shared,
content-addressed directory (``--dest-shared-blob-dir``), so a layer is downloaded
once whatever image or snapshot needs it again. skopeo takes a blob found there
without asking the registry for it: a manifest naming another tenant's private layer
by its digest would get its content from there. So blobs are shared only among pulls
made with the same access: ``<snapshot_dir>/.images/blobs-public`` for pulls without a
tenant's credentials (public images, or the operator's ``COVE_REGISTRY_AUTH``, which
every organization's pulls use), and a directory of their own for each set of
credentials (registry, user, password) a pull names. The pull's own layout (its
``index.json``) is temporary; its ``blobs`` is pointed at the shared directory for
``umoci`` to unpack it (see ``unpack.py``) into the snapshot, built aside and renamed
into place when complete.

Credentials are never put on a command line: they go to a 0600 auth file in the
pull's private directory, for the one registry they belong to. Without them, the
operator's auth file (``COVE_REGISTRY_AUTH``) is used. skopeo runs with an empty
home, so no other credentials of the host are ever sent. Registries listed in
``COVE_INSECURE_REGISTRIES`` are reached without TLS verification (HTTP if they
do not speak HTTPS); any other over TLS, verified with the host's CA store.

skopeo runs in a network namespace of its own whose one way out is a proxy that
reaches only what a sandbox may (``cove.runner.host.egress``): the registry a
tenant names, and where it redirects, cannot make the host call its loopback, its
own addresses, other sandboxes or a cloud's metadata service.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import platform
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cove.core.config import Settings, registry_listed
from cove.core.ports import PulledImage, RegistryAuth
from cove.errors import RuntimeBackendError
from cove.hostfiles import private_dir
from cove.runner.host.egress import Egress
from cove.runner.storage import capture, layers, unpack
from cove.runner.storage.snapshot import WATCH_SECONDS, stream

CACHE = ".images"
TAG = "image"
_PASSED_ENV = ("PATH", "LANG", "SSL_CERT_FILE", "SSL_CERT_DIR")  # (the proxy: Egress's)
METADATA = 16 * 2**20  # bytes a download may have beyond the layers' limit (manifests, config)
_COPYING = re.compile(r"^Copying (?:blob|config) sha256:([0-9a-f]{64})")
_FATAL = re.compile(r'level=fatal msg="((?:[^"\\]|\\.)*)')  # (a long one is cut: no end)


def pull(
    settings: Settings, ref: str, image: str, auth: RegistryAuth | None,
    progress: Callable[[str], None] | None = None, cancel: threading.Event | None = None,
) -> PulledImage:  # fmt: skip
    """Make snapshot ``ref`` (under ``settings.snapshot_dir``) from registry image
    ``image`` (a normalized reference such as ``docker.io/library/python:3.12``).
    Once ``cancel`` is set (its snapshot was deleted), skopeo is killed within
    :data:`WATCH_SECONDS` and the pull fails: a tenant's registry may be as slow as it
    likes, and a pull nobody waits for must not run on for COVE_PULL_TIMEOUT_SECONDS.

    Raises:
        RuntimeBackendError: the registry refused or could not be reached, the image
            does not exist, unpacking failed, or it was cancelled; nothing named
            ``ref`` is left.
        ImageTooLarge: its layers, compressed or unpacked, pass COVE_MAX_IMAGE_MB; the
            blobs this pull brought into the layer cache are removed again. A download
            passing it is stopped there.
    """
    assert settings.snapshot_dir is not None
    base = settings.snapshot_dir
    say = progress or (lambda _line: None)
    cache = private_dir(base / CACHE)
    blobs = private_dir(cache / blob_dir(auth))
    limit = settings.max_image_mb * 2**20
    stop = cancel or threading.Event()
    with tempfile.TemporaryDirectory(prefix="pull-", dir=cache) as tmp:
        work = Path(tmp)
        layout = work / "layout"
        say(f"Pulling {image}")
        authfile = _authfile(settings, auth, work)
        with Egress(settings, image.split("/", 1)[0]) as egress:
            _check_announced(settings, image, authfile, work, limit, egress, stop)
            cached = _blob_names(blobs)
            download = _Download(image, work, blobs, cached, limit, say, stop)
            _copy(settings, image, authfile, work, layout, blobs, download.heard,
                  download.over, egress)  # fmt: skip
        digest = (work / "digest").read_text().strip()
        _share_blobs(layout, blobs)
        say(f"Digest: {digest}")
        try:
            layers.check_compressed(layout, TAG, limit, image)
            layers.check_unpacked(layout, TAG, limit, image)
        except RuntimeBackendError:
            _forget_new_blobs(layout, blobs, cached)
            raise
        if stop.is_set():
            raise _cancelled()
        say("Unpacking the image")
        with capture.building(base, ref) as rootfs:
            config = unpack.unpack_image(layout, TAG, rootfs)
            unpack.write_config(rootfs.parent, config, digest)
            size = capture.size(rootfs)
    say(f"Snapshot of {image} ready")
    return PulledImage(size=size, digest=digest, config=config)


def blob_dir(auth: RegistryAuth | None) -> str:
    """The name of the blob directory of pulls made with ``auth`` (see the module's
    docstring): what was fetched with some credentials is found only with the same."""
    if auth is None:  # (not "blobs": a cache of Cove before 2026-12 mixed both kinds)
        return "blobs-public"
    access = "\0".join((auth.registry, auth.username, auth.password)).encode()
    return "blobs-" + hashlib.sha256(access).hexdigest()[:32]


def _copy(
    settings: Settings, image: str, authfile: Path | None, work: Path, layout: Path,
    blobs: Path, say: Callable[[str], None], guard: Callable[[], Exception | None],
    egress: Egress,
) -> None:  # fmt: skip
    argv = ["skopeo", "copy", "--retry-times", "2", "--dest-shared-blob-dir", str(blobs),
            "--digestfile", str(work / "digest")]  # fmt: skip
    argv += ["--src-" + flag[2:] for flag in _source_flags(settings, image, authfile)]
    argv += [f"docker://{image}", f"oci:{layout}:{TAG}"]
    try:
        stream(egress.wrap(argv), say, env=egress.env(_skopeo_env(work)), name="skopeo",
               timeout=settings.pull_timeout_seconds, stop_when=guard)  # fmt: skip
    except layers.ImageTooLarge:
        raise
    except RuntimeBackendError as exc:
        raise RuntimeBackendError(f"pulling {image} failed: {_reason(exc.message)}") from exc


class _Download:
    """What one pull has written, to stop it once that passes ``limit`` (and
    :data:`METADATA` for the manifests and config), or once ``cancel`` is set: skopeo
    checks a blob's size and digest only once it has all of it, so a registry could
    announce a small layer and send an endless one, or many. Counted: the pull's own
    files (skopeo's blobs in progress) and the shared blobs it says it copies ("Copying
    blob sha256:...") that were not cached before; other pulls' blobs, arriving
    meanwhile, are theirs."""

    def __init__(self, image: str, work: Path, blobs: Path, cached: set[str], limit: int,
                 say: Callable[[str], None],
                 cancel: threading.Event | None = None) -> None:  # fmt: skip
        self.image, self.work, self.blobs, self.cached = image, work, blobs, cached
        self.limit, self.say, self.cancel = limit, say, cancel or threading.Event()
        self.mine: set[str] = set()

    def heard(self, line: str) -> None:
        """A line of skopeo's output."""
        found = _COPYING.match(line)
        if found is not None and found.group(1) not in self.cached:
            self.mine.add(found.group(1))
        self.say(line)

    def over(self) -> Exception | None:
        """ImageTooLarge once the download passes the limit; an error once cancelled."""
        if self.cancel.is_set():
            return _cancelled()
        written = sum(map(_size, _files(self.work)))
        written += sum(_size(self.blobs / "sha256" / name) for name in self.mine)
        if written <= self.limit + METADATA:
            return None
        return layers.ImageTooLarge(
            f"{self.image} is larger than COVE_MAX_IMAGE_MB ({self.limit // 2**20} MiB): "
            "the download passed it")  # fmt: skip


def _cancelled() -> RuntimeBackendError:
    return RuntimeBackendError("the pull was cancelled")


def _files(top: Path) -> Iterator[Path]:
    for where, _dirs, files in os.walk(top):
        for name in files:
            yield Path(where, name)


def _size(path: Path) -> int:
    """The size of the file ``path`` (0: gone meanwhile, or not there yet)."""
    try:
        return os.lstat(path).st_size
    except FileNotFoundError:
        return 0


def _source_flags(settings: Settings, image: str, authfile: Path | None) -> list[str]:
    """How skopeo reaches ``image``'s registry (``copy`` spells them ``--src-...``)."""
    flags = [f"--authfile={authfile}"] if authfile is not None else []
    if registry_listed(image.split("/", 1)[0], settings.insecure_registries):
        flags.append("--tls-verify=false")
    return flags


def _skopeo_env(work: Path) -> dict[str, str]:
    """skopeo's environment: an empty home, so no credentials of the host are used."""
    home = work / "home"
    if not home.is_dir():
        private_dir(home)
    env = {k: v for k, v in os.environ.items() if k in _PASSED_ENV}
    env.update(HOME=str(home), XDG_RUNTIME_DIR=str(home), XDG_CONFIG_HOME=str(home))
    return env


def _check_announced(settings: Settings, image: str, authfile: Path | None, work: Path,
                     limit: int, egress: Egress, cancel: threading.Event) -> None:  # fmt: skip
    """Refuse, before any download, an image whose manifest (for this host's platform)
    announces layers over ``limit`` bytes. The registry's word: the download is checked
    again. A manifest that cannot be read here is left to ``skopeo copy`` to report.

    Raises:
        ImageTooLarge: the announced sizes pass ``limit``.
    """
    flags = _source_flags(settings, image, authfile)
    found = _raw_manifest(settings, f"docker://{image}", flags, work, egress, cancel)
    if found is not None and isinstance(found.get("manifests"), list):
        digest = _platform_digest(found["manifests"])
        found = None if digest is None else _raw_manifest(
            settings, f"docker://{_repository(image)}@{digest}", flags, work, egress, cancel)
    if found is not None:
        layers.refuse_compressed(layers.compressed_size(found), limit, image)


def _raw_manifest(settings: Settings, ref: str, flags: list[str], work: Path,
                  egress: Egress, cancel: threading.Event) -> dict[str, Any] | None:  # fmt: skip
    """The manifest ``ref`` names (None: it could not be read in time, or the pull was
    cancelled meanwhile)."""
    argv = ["skopeo", "inspect", "--raw", "--retry-times", "2", *flags, ref]
    deadline = time.monotonic() + min(120.0, settings.pull_timeout_seconds)
    try:
        # (its errors are not read: a registry's may be as long as it likes)
        proc = subprocess.Popen(egress.wrap(argv), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                env=egress.env(_skopeo_env(work)))  # fmt: skip
    except OSError:
        return None
    with proc:
        while True:
            try:
                out, _ = proc.communicate(timeout=WATCH_SECONDS)
                break
            except subprocess.TimeoutExpired:
                if cancel.is_set() or time.monotonic() > deadline:
                    proc.kill()
                    proc.wait()
                    return None
    try:
        found = json.loads(out) if proc.returncode == 0 else None
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def _platform_digest(manifests: list[Any]) -> str | None:
    """The digest of the entry of an image index for this host (linux, its CPU)."""
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    for entry in manifests:
        where = entry.get("platform") if isinstance(entry, dict) else None
        if isinstance(where, dict) and (where.get("os"), where.get("architecture")) == (
                "linux", arch) and isinstance(entry.get("digest"), str):
            return str(entry["digest"])
    return None


def _repository(image: str) -> str:
    """``image`` without its tag or digest."""
    if "@" in image:
        return image.split("@", 1)[0]
    head, _, last = image.rpartition("/")
    return f"{head}/{last.partition(':')[0]}" if head else last.partition(":")[0]


def _authfile(settings: Settings, auth: RegistryAuth | None, work: Path) -> Path | None:
    """An auth file with ``auth`` for its registry alone; else the operator's."""
    if auth is None:
        return settings.registry_auth
    token = base64.b64encode(f"{auth.username}:{auth.password}".encode()).decode()
    path = work / "auth.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"auths": {auth.registry: {"auth": token}}}, f)
    return path


def _share_blobs(layout: Path, blobs: Path) -> None:
    """Point the pull's layout at the shared blobs (skopeo left an empty dir there)."""
    own = layout / "blobs"
    if own.is_symlink() or own.is_file():
        own.unlink()
    elif own.is_dir():
        for leftover in own.rglob("*"):
            if leftover.is_file():
                leftover.unlink()
        for empty in sorted(own.rglob("*"), reverse=True):
            empty.rmdir()
        own.rmdir()
    own.symlink_to(blobs)


def _blob_names(blobs: Path) -> set[str]:
    where = blobs / "sha256"
    return {entry.name for entry in os.scandir(where)} if where.is_dir() else set()


def _forget_new_blobs(layout: Path, blobs: Path, cached: set[str]) -> None:
    """Remove the blobs of the image in ``layout`` that were not in the cache before."""
    try:
        names = [d.split(":", 1)[1] for d in layers.digests(layout, TAG)]
    except RuntimeBackendError:
        return
    for name in names:
        if name not in cached and "/" not in name:
            (blobs / "sha256" / name).unlink(missing_ok=True)


def _reason(message: str) -> str:
    """skopeo's own error (``level=fatal msg="..."``) without the wrapping."""
    found = _FATAL.search(message)
    if found is None:
        return message
    text = found.group(1).replace('\\"', '"').replace("\\\\", "\\")
    return re.sub(r'^Error (?:parsing image name|initializing source) "[^"]*": ', "", text)
