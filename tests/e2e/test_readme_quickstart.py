"""The README's quick start, pasted as it is: its Python and TypeScript snippets run
against a real server with only DAYTONA_API_URL and DAYTONA_API_KEY set."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import KEY, Server

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
TS = ROOT / "tests" / "ts"


def _snippet(language: str) -> str:
    text = (ROOT / "README.md").read_text()
    quick = text[: text.index("## What a sandbox is")]
    found = re.search(rf"```{language}\n(.*?)```", quick, re.S)
    assert found, f"no {language} snippet in the README's quick start"
    return found.group(1)


def _env(server: Server) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAYTONA_")}
    return {**env, "DAYTONA_API_URL": server.api_url, "DAYTONA_API_KEY": KEY}


def test_the_python_quick_start_runs_as_pasted(server: Server) -> None:
    done = subprocess.run([sys.executable, "-c", _snippet("python")], env=_env(server),
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line]
    assert lines[0].startswith("hello from ") and lines[0] != "hello from " and lines[1] == "42"


def test_the_typescript_quick_start_runs_as_pasted(server: Server) -> None:
    node = shutil.which("node")
    if node is None or not (TS / "node_modules" / "@daytonaio" / "sdk").is_dir():
        pytest.fail("Node.js and tests/ts/node_modules are needed: run scripts/install")
    done = subprocess.run([node, "--input-type=module", "-e", _snippet("ts")], cwd=TS,
                          env=_env(server), capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("Linux ")
