"""An image's metadata (index, manifest, config) comes from whoever pushed the image:
a JSON document nested past the parser's depth is an invalid image, refused as any
other, not an unexpected error of the pull; a failure that quotes it is cut short."""

from __future__ import annotations

from pathlib import Path

import pytest

from cove.errors import RuntimeBackendError
from cove.runner.storage import unpack
from tests.registry import ImageSpec, busybox_layer, layout

DEEP = b"[" * 100_000 + b"]" * 100_000


def test_a_config_is_read(tmp_path: Path) -> None:
    where = layout(tmp_path / "img", ImageSpec([], workdir="/w", user="u"))
    config = unpack.read_config(where, "v1")
    assert (config.workdir, config.user, config.cmd) == ("/w", "u", ("/bin/sh",))


def test_an_index_nested_past_the_parsers_depth_is_an_invalid_image(tmp_path: Path) -> None:
    where = layout(tmp_path / "img", ImageSpec([]))
    (where / "index.json").write_bytes(DEEP)
    with pytest.raises(RuntimeBackendError, match="unreadable image metadata index.json"):
        unpack.read_config(where, "v1")


def test_a_config_nested_past_the_parsers_depth_is_an_invalid_image(tmp_path: Path) -> None:
    where = layout(tmp_path / "img", ImageSpec([]))
    manifest = unpack.manifest(where, "v1")
    unpack.blob(where, manifest["config"]["digest"]).write_bytes(b'{"config":' + DEEP + b"}")
    with pytest.raises(RuntimeBackendError, match="unreadable image metadata"):
        unpack.read_config(where, "v1")


def test_a_failure_quoting_the_images_config_is_cut_short(tmp_path: Path) -> None:
    """umoci refuses a User its image's /etc/passwd lacks, quoting it whole: one of
    1 MiB would be the error a sandbox or snapshot keeps (and every listing returns).
    The error keeps the start and the end of umoci's line."""
    image = ImageSpec([busybox_layer()], user="u" * 2**20)
    where = layout(tmp_path / "img", image)
    (tmp_path / "rootfs").mkdir()
    with pytest.raises(RuntimeBackendError) as caught:
        unpack.unpack_image(where, "v1", tmp_path / "rootfs")
    message = caught.value.message
    assert len(message) < 2048, len(message)
    assert message.startswith("umoci unpack --image exited 1: ")
    assert "cannot parse user spec" in message and message.endswith("passwd file")
