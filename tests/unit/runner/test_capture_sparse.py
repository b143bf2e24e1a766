"""A capture copies a sandbox's files as they are: holes stay holes."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import pytest

from cove.core.ports import ImageConfig
from cove.runner.storage import capture

SIZE = 6 * 2**30  # on a disk of 1 GiB, say: a file may claim 16 TiB of holes


def test_a_capture_keeps_sparse_files_sparse(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """The sandbox's file of 6 GiB of holes is captured as holes: the host never writes
    more than the sandbox's disk holds. (The sandbox's merged view is a directory here.)"""
    view = tmp_path / "view"
    (view / "home").mkdir(parents=True)
    with open(view / "home/holes", "wb") as f:
        f.truncate(SIZE)
        f.seek(SIZE)
        f.write(b"end\n")
    monkeypatch.setattr(capture, "_merged_view", lambda *args: nullcontext(view))
    base = tmp_path / "snapshots"
    base.mkdir()
    capture.capture_sandbox(base, "sparse", "group", None, None, alive=False,  # type: ignore[arg-type]
                            config=ImageConfig())  # fmt: skip
    captured = base / "sparse/rootfs/home/holes"
    st = captured.stat()
    assert st.st_size == SIZE + 4
    assert st.st_blocks * 512 < 2**20, "the holes were written out as zeros"
    with open(captured, "rb") as f:
        f.seek(SIZE)
        assert f.read() == b"end\n"
