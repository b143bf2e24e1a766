"""The official TypeScript SDK (``@daytonaio/sdk``, installed in ``tests/ts``) against a
real server: create, exec (and its timeout), live metrics, an LSP completion, delete."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import KEY, Server

pytestmark = pytest.mark.e2e
TS = Path(__file__).resolve().parents[1] / "ts"


@pytest.fixture(scope="module")
def node() -> str:
    node = shutil.which("node")
    if node is None or not (TS / "node_modules" / "@daytonaio" / "sdk").is_dir():
        pytest.fail("Node.js and tests/ts/node_modules are needed: run scripts/install")
    return node


def test_typescript_sdk_end_to_end(server: Server, node: str) -> None:
    done = subprocess.run([node, "sdk_check.js", server.api_url, KEY], cwd=TS,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["state"] == "started" and out["autoArchiveInterval"] == 43200
    assert out["exec"] == {"exitCode": 0, "result": "hello-from-ts\n"}
    assert "command execution timeout" in out["timeout"]
    metrics = out["metrics"]
    assert metrics["cpuCount"] == 1 and 0 < metrics["memUsed"] < metrics["memTotal"]
    assert 0 < metrics["diskUsed"] < metrics["diskTotal"]
    assert "toUpperCase" in out["completionLabels"]
    assert out["symbols"] == ["s"]
    assert out["entrypoint"] == {"sessionId": "entrypoint", "commands": 0}
    assert out["signedDownload"] == {"status": 200, "body": "const s = 'abc';\ns.toUpp\n"}
    assert out["deleted"] is True
    print(f"TS SDK: LSP start {out['lspStartMs']} ms, "  # noqa: T201
          f"first completion {out['firstCompletionMs']} ms")
