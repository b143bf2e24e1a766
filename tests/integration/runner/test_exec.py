"""exec: timeouts kill the whole process tree; background processes do not block."""

from __future__ import annotations

import time

import pytest

from cove.errors import RuntimeBackendError, Timeout
from cove.runner.oci.runtime import OciRuntime
from tests.integration.conftest import SandboxFactory
from tests.integration.runner.util import ok

pytestmark = pytest.mark.integration


def test_timeout_kills_the_process_tree(runtime: OciRuntime, make_sandbox: SandboxFactory) -> None:
    box = make_sandbox()
    sid = box.sandbox_id
    tree = (
        "sh -c 'sleep 300 & sleep 301 & wait' & sleep 302 & "
        "python3 -c 'import time; time.sleep(303)'"
    )
    start = time.monotonic()
    with pytest.raises(Timeout):
        runtime.exec(sid, ["sh", "-c", tree], timeout=1.5)
    assert time.monotonic() - start < 10
    left = ok(runtime, sid, "ps -e -o comm= | grep -cE 'sleep|python3' || true")
    assert left.strip() == "0", ok(runtime, sid, "ps -ef")


def test_background_process_does_not_hold_exec(
    runtime: OciRuntime, make_sandbox: SandboxFactory
) -> None:
    box = make_sandbox()
    start = time.monotonic()
    res = runtime.exec(box.sandbox_id, ["sh", "-c", "sleep 60 & echo started"], timeout=20)
    assert res.exit_code == 0 and res.stdout == b"started\n"
    assert time.monotonic() - start < 10


def test_large_output_and_missing_binary(runtime: OciRuntime, make_sandbox: SandboxFactory) -> None:
    box = make_sandbox()
    res = runtime.exec(box.sandbox_id, ["sh", "-c", "head -c 5000000 /dev/zero"], timeout=30)
    assert len(res.stdout) == 5_000_000
    res = runtime.exec(box.sandbox_id, ["/no/such/binary"], timeout=30)
    assert res.exit_code != 0


def test_exec_on_stopped_sandbox_fails(runtime: OciRuntime, make_sandbox: SandboxFactory) -> None:
    box = make_sandbox(start=False)
    with pytest.raises(RuntimeBackendError):
        runtime.exec(box.sandbox_id, ["true"])


def test_init_reaps_orphans(runtime: OciRuntime, make_sandbox: SandboxFactory) -> None:
    box = make_sandbox()
    ok(runtime, box.sandbox_id, "for i in 1 2 3 4 5; do (sleep 0.2 &) ; done")
    time.sleep(1.0)
    states = ok(runtime, box.sandbox_id, "ps -e -o stat=,comm=")
    assert "Z" not in "".join(line.split()[0] for line in states.splitlines()), states
