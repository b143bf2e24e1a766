"""Snapshots captured from sandboxes: a sandbox made from one sees the files the
captured sandbox saw."""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from cove.runner.oci.runtime import OciRuntime
from cove.runner.storage import capture
from tests.integration.conftest import SandboxFactory
from tests.integration.runner.util import ok

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
