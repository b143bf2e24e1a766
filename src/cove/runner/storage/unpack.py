"""Unpacking an OCI image into a snapshot's root filesystem, and the image config
kept beside it.

Layers are hostile input. ``umoci unpack`` (run as root, so owners, modes and
xattrs are kept) resolves every path of every layer inside the root filesystem
(symbolic links, ``..`` and hard links cannot lead out of it) and applies
whiteouts. Device nodes are then removed: a sandbox's overlay is mounted in its
user namespace, where they would not open anyway, and the host keeps none.
The root filesystem is only ever an idmapped, read-only overlay lower layer.

The image's config (Env, WorkingDir, User, Entrypoint, Cmd) is kept as
``image.json`` next to the snapshot's ``rootfs``: sandboxes started from the
snapshot get its env and working directory (see :func:`image_env`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
from pathlib import Path
from typing import Any

from cove.core.ports import ImageConfig
from cove.errors import RuntimeBackendError
from cove.hostfiles import walk_tree
from cove.runner.host.proc import run

CONFIG_FILE = "image.json"
REF_NAME = "org.opencontainers.image.ref.name"
WORKDIR_ENV = "COVE_WORKDIR"  # tells the agent where processes start by default
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_ENV_KEY = re.compile(r"^[^=\0]{1,1024}$")
MAX_CONFIG = 4 * 1024 * 1024


def unpack_image(layout: Path, tag: str, rootfs: Path) -> ImageConfig:
    """Unpack image ``layout:tag`` into the empty directory ``rootfs``; returns its config.

    Raises:
        RuntimeBackendError: umoci failed, or the layout is not a readable image.
    """
    bundle = rootfs.parent / "bundle"
    run(["umoci", "unpack", "--image", f"{layout}:{tag}", str(bundle)], timeout=1800)
    os.rmdir(rootfs)
    (bundle / "rootfs").rename(rootfs)
    shutil.rmtree(bundle)
    remove_devices(rootfs)
    return read_config(layout, tag)


def remove_devices(root: Path) -> None:
    """Delete every block and character device node under ``root`` (never following
    a symbolic link; an image's tree may be nested as deep as its registry liked)."""
    for entry in walk_tree(root):
        mode = entry.stat(follow_symlinks=False).st_mode
        if stat.S_ISBLK(mode) or stat.S_ISCHR(mode):
            os.unlink(entry.path)


def read_config(layout: Path, tag: str) -> ImageConfig:
    """The config of image ``tag`` in the OCI layout ``layout``.

    Raises:
        RuntimeBackendError: no such tag, or a manifest or config that is not valid.
    """
    found = manifest(layout, tag)
    config = read_json(blob(layout, found.get("config", {}).get("digest"))).get("config") or {}
    return ImageConfig(
        env=_env(config.get("Env")),
        workdir=_text(config.get("WorkingDir")),
        user=_text(config.get("User")),
        entrypoint=_words(config.get("Entrypoint")),
        cmd=_words(config.get("Cmd")),
    )


def manifest_descriptor(layout: Path, tag: str) -> dict[str, Any]:
    """The index entry of image ``tag`` in the OCI layout ``layout``.

    Raises:
        RuntimeBackendError: no such tag, or an index that is not valid.
    """
    index = read_json(layout / "index.json")
    manifests = index.get("manifests", [])
    found = [m for m in manifests if isinstance(m, dict)
             and (m.get("annotations") or {}).get(REF_NAME) == tag]  # fmt: skip
    if not found:
        raise RuntimeBackendError(f"the image layout has no tag '{tag}'")
    return found[0]


def manifest(layout: Path, tag: str) -> dict[str, Any]:
    """The manifest of image ``tag`` in the OCI layout ``layout``.

    Raises:
        RuntimeBackendError: no such tag, or metadata that is not valid.
    """
    return read_json(blob(layout, manifest_descriptor(layout, tag).get("digest")))


def write_config(snapshot: Path, config: ImageConfig, digest: str | None = None) -> None:
    """Keep ``config`` with the snapshot whose directory is ``snapshot``."""
    data = {"digest": digest, "env": dict(config.env), "workdir": config.workdir,
            "user": config.user, "entrypoint": list(config.entrypoint), "cmd": list(config.cmd),
            "labels": dict(config.labels)}
    (snapshot / CONFIG_FILE).write_text(json.dumps(data, indent=2))


def copy_config(lower: Path, snapshot: Path) -> None:
    """Carry the image config of the snapshot whose rootfs is ``lower`` over to a
    snapshot made from it (a capture); nothing when it has none."""
    source = lower.parent / CONFIG_FILE
    if source.is_file():
        shutil.copyfile(source, snapshot / CONFIG_FILE)


def image_env(lower: Path) -> dict[str, str]:
    """The environment a sandbox over the snapshot rootfs ``lower`` starts with: the
    image's Env, and its WorkingDir as ``COVE_WORKDIR`` (for the agent); empty for
    snapshots not made from an image."""
    try:
        data = json.loads((lower.parent / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return {}
    env = _env([f"{k}={v}" for k, v in (data.get("env") or {}).items()])
    workdir = _text(data.get("workdir"))
    if workdir and workdir.startswith("/"):
        env[WORKDIR_ENV] = workdir
    return env


def blob(layout: Path, digest: object) -> Path:
    """Where blob ``digest`` lies in ``layout``.

    Raises:
        RuntimeBackendError: ``digest`` is not a sha256 digest.
    """
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise RuntimeBackendError(f"invalid digest in the image: {digest!r}")
    return layout / "blobs" / "sha256" / digest.split(":", 1)[1]


def read_json(path: Path) -> dict[str, Any]:
    """An image's JSON metadata (at most 4 MiB of it read).

    Raises:
        RuntimeBackendError: unreadable, or not a JSON object.
    """
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read(MAX_CONFIG + 1)[:MAX_CONFIG])
    except (OSError, ValueError, RecursionError) as exc:
        raise RuntimeBackendError(f"unreadable image metadata {path.name}: {exc}") from exc
    if not isinstance(data, dict):
        raise RuntimeBackendError(f"invalid image metadata {path.name}")
    return data


def _env(items: object) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in items if isinstance(items, list) else []:
        key, eq, value = str(item).partition("=")
        if eq and _ENV_KEY.match(key) and "\0" not in value:
            env[key] = value
    return env


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value and "\0" not in value else None


def _words(value: object) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list) else ()
