"""Snapshots captured from sandboxes: a sandbox made from one sees the files the
captured sandbox saw."""

from __future__ import annotations

import dataclasses
import os
import stat
import uuid
from pathlib import Path

import pytest

from cove.runner.layout import SandboxPaths
from cove.runner.oci.runtime import OciRuntime
from cove.runner.storage import capture
from tests.integration.conftest import SandboxFactory
from tests.integration.runner.util import TIERS, group, ok

pytestmark = pytest.mark.integration

# Extended attributes named as overlayfs' own metadata, set by the sandbox's root on its
# files (its overlay keeps them escaped, as user.overlay.overlay.*, and shows them back
# as plain attributes): on a snapshot's layer they would be whiteouts and metacopy marks.
OVERLAY_NAMED = """
set -e
mkdir -p /srv/kept/sub
: > /srv/kept/empty
echo data > /srv/kept/data
python3 - <<'EOF'
import os
os.setxattr('/srv/kept', 'user.overlay.opaque', b'x')
os.setxattr('/srv/kept/empty', 'user.overlay.whiteout', b'')
os.setxattr('/srv/kept/data', 'user.overlay.metacopy', b'')
os.setxattr('/srv/kept/data', 'user.cove', b'kept')
EOF
"""
CHECK = """
ls /srv/kept
cat /srv/kept/data
python3 -c "import os; print(os.getxattr('/srv/kept/data', 'user.cove'))"
"""


def test_a_sandboxs_attributes_never_become_overlay_metadata_of_the_snapshot(
    runtime: OciRuntime, make_sandbox: SandboxFactory
) -> None:
    """A sandbox's root names attributes of its files as overlayfs' own (an opaque mark
    of "x", a whiteout mark, a metacopy mark): in the sandbox they are plain attributes,
    and a sandbox made from its snapshot still sees those files, whole."""
    source = make_sandbox().sandbox_id
    ok(runtime, source, OVERLAY_NAMED)
    assert ok(runtime, source, CHECK) == "data\nempty\nsub\ndata\nb'kept'\n"
    settings = runtime._settings
    assert settings.snapshot_dir is not None
    ref = f"it-capture-{uuid.uuid4().hex[:8]}"
    runtime.capture(source, ref)
    try:
        spec = make_sandbox(start=False)  # (its id is destroyed at the end: reused here)
        runtime.destroy(spec.sandbox_id)
        spec = dataclasses.replace(spec, snapshot=ref)
        runtime.create(spec)
        runtime.start(spec)
        assert ok(runtime, spec.sandbox_id, CHECK) == "data\nempty\nsub\ndata\nb'kept'\n"
        runtime.destroy(spec.sandbox_id)
    finally:
        capture.remove(settings.snapshot_dir, ref)


# Every kind of change a sandbox makes to its snapshot's files (a Debian rootfs), and
# files of its own. Some keep a changed file's size and times (only the layer tells).
# (gVisor keeps no user.* attributes: there /etc/shells gets new times instead.)
CHANGES = r"""
set -e
printf 'changed\n' > /etc/debian_version.new
touch -r /etc/debian_version /etc/debian_version.new
size=$(stat -c %s /etc/debian_version)
head -c "$size" /dev/zero | tr '\0' 'x' > /etc/debian_version
touch -r /etc/debian_version.new /etc/debian_version
chmod 0600 /etc/issue.net
chown 1000:1000 /etc/host.conf
python3 -c "import os; os.setxattr('/etc/shells', 'user.cove', b'set')" 2>/dev/null \
  || touch /etc/shells
rm /etc/motd
rm -r /usr/share/doc/bash
mv /usr/share/doc/coreutils /opt/moved-doc
rm -r /usr/share/doc/grep && mkdir /usr/share/doc/grep && echo mine > /usr/share/doc/grep/own
mv /etc/issue /etc/issue.renamed
mkdir -p /srv/new/deep && echo one > /srv/new/deep/a && ln /srv/new/deep/a /srv/new/b
ln -s ../etc/passwd /srv/new/link && mkfifo /srv/new/fifo
head -c 100000 /dev/urandom > /srv/new/random
"""


def _tree(root: Path) -> dict[str, tuple[object, ...]]:
    """Every path under ``root``: kind, mode, owners, size, times (not of directories,
    whose times tar sets), link target, attributes (not overlayfs' own)."""
    out: dict[str, tuple[object, ...]] = {}
    for top, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = Path(top, name)
            st = path.lstat()
            target = os.readlink(path) if stat.S_ISLNK(st.st_mode) else None
            attrs = sorted(a for a in os.listxattr(path, follow_symlinks=False)
                           if not a.startswith("user.overlay."))  # fmt: skip
            when = None if stat.S_ISDIR(st.st_mode) else st.st_mtime_ns
            out[str(path.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid,
                                                st.st_size if not stat.S_ISDIR(st.st_mode)
                                                else None, when, target, attrs)  # fmt: skip
    return out


@pytest.mark.parametrize("tier", TIERS)
def test_a_capture_copies_what_the_sandbox_changed_and_links_the_rest(
    runtime: OciRuntime, make_sandbox: SandboxFactory, default_rootfs: Path, tier: str
) -> None:
    """A capture is the sandbox's whole file system as it sees it: every change (new,
    rewritten with its old size and times, chmod, chown, attributes, deletions,
    renames, a directory replaced) and every untouched file of its snapshot, which is
    a hard link to the snapshot's own; the snapshot itself is left as it was."""
    spec = make_sandbox()
    ok(runtime, spec.sandbox_id, CHANGES)
    before = (default_rootfs / "etc/debian_version").read_bytes()
    settings = runtime._settings
    assert settings.snapshot_dir is not None
    ref = f"it-capture-{uuid.uuid4().hex[:8]}"
    runtime.capture(spec.sandbox_id, ref)
    try:
        captured = settings.snapshot_dir / ref / "rootfs"
        paths = SandboxPaths.of(settings.data_dir, spec.sandbox_id)
        meta = paths.read_metadata()
        with capture._merged_view(group(runtime, spec.sandbox_id), paths, meta, True) as view:
            assert _tree(captured) == _tree(view)
        lower = Path(meta.lower)
        assert (lower / "etc/debian_version").read_bytes() == before  # the snapshot's own
        assert (captured / "etc/debian_version").read_bytes() == b"x" * len(before)
        assert (captured / "srv/new/deep/a").stat().st_ino == (captured / "srv/new/b").stat().st_ino
        assert (captured / "usr/share/doc/grep/own").read_text() == "mine\n"
        assert not (captured / "etc/motd").exists()
        assert not (captured / "usr/share/doc/bash").exists()
        for rel in ("usr/bin/python3.11", "etc/passwd", "usr/lib/os-release"):  # untouched
            assert (captured / rel).lstat().st_ino == (lower / rel).lstat().st_ino, rel
        for rel, was in (("etc/debian_version", None), ("etc/issue.net", None),
                         ("etc/host.conf", None), ("etc/shells", None),
                         ("opt/moved-doc/copyright", "usr/share/doc/coreutils/copyright")):
            assert (captured / rel).lstat().st_ino != (lower / (was or rel)).lstat().st_ino, rel
    finally:
        capture.remove(settings.snapshot_dir, ref)
