"""An image's metadata (index, manifest, config) comes from whoever pushed the image:
a JSON document nested past the parser's depth is an invalid image, refused as any
other, not an unexpected error of the pull."""

from __future__ import annotations

from pathlib import Path

import pytest

from cove.errors import RuntimeBackendError
from cove.runner.storage import unpack
from tests.registry import ImageSpec, layout

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
