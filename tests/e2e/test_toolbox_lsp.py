"""Language servers through the official SDK (sync and async): real pylsp and
typescript-language-server inside the sandbox."""

from __future__ import annotations

import pytest
from daytona import CreateSandboxFromSnapshotParams, DaytonaError, LspCompletionPosition

pytestmark = pytest.mark.e2e

PY = "def greet_person(name):\n    return 'hi ' + name\n\n\nimport os\nos.pa\n"
TS = ("export function greetPerson(name: string): string {\n  return 'hi ' + name;\n}\n"
      "const text = 'abc';\ntext.toUpp\n")


@pytest.fixture
def sb(daytona, sandboxes):  # noqa: ANN001, ANN201
    box = daytona.create(CreateSandboxFromSnapshotParams())
    sandboxes.append(box)
    box.fs.create_folder("proj", "755")
    box.fs.upload_file(PY.encode(), "proj/main.py")
    box.fs.upload_file(TS.encode(), "proj/main.ts")
    return box


def test_python_language_server(sb) -> None:  # noqa: ANN001
    project = sb.get_user_home_dir() + "/proj"
    lsp = sb.create_lsp_server("python", project)
    lsp.start()
    lsp.start()  # a no-op while it runs
    lsp.did_open(project + "/main.py")
    completions = lsp.completions(project + "/main.py", LspCompletionPosition(line=5, character=5))
    assert "path" in [item.label for item in completions.items]
    symbols = lsp.document_symbols(project + "/main.py")
    greet = [s for s in symbols if s.name == "greet_person"]
    assert greet and greet[0].kind == 12  # Function
    assert greet[0].location.uri.endswith("/proj/main.py")
    assert greet[0].location.range.start.line == 0
    assert isinstance(lsp.sandbox_symbols("greet"), list)
    lsp.did_close(project + "/main.py")
    lsp.stop()
    with pytest.raises(DaytonaError, match="start it first"):
        lsp.document_symbols(project + "/main.py")
    assert "pylsp" not in sb.process.exec("ps -eo comm").result


def test_typescript_language_server_relative_paths(sb) -> None:  # noqa: ANN001
    """Relative document paths are below the project, as the SDK documents."""
    lsp = sb.create_lsp_server("typescript", "proj")
    lsp.start()
    lsp.did_open("main.ts")
    completions = lsp.completions("main.ts", LspCompletionPosition(line=4, character=10))
    assert "toUpperCase" in [item.label for item in completions.items]
    names = [s.name for s in lsp.document_symbols("main.ts")]
    assert "greetPerson" in names
    found = lsp.sandbox_symbols("greetPerson")
    assert [s.name for s in found if s.name == "greetPerson"]
    lsp.stop()


def test_bad_language_and_missing_file_are_clear_errors(sb) -> None:  # noqa: ANN001
    lsp = sb.create_lsp_server("python", "proj")
    lsp.start()
    with pytest.raises(DaytonaError, match="file not found"):
        lsp.did_open("nope.py")
    lsp.stop()
    with pytest.raises(DaytonaError):
        sb.create_lsp_server("cobol", "proj").start()
    # the server's own refusal is the caller's to fix: a 400 (schemathesis: was a 502)
    sb.fs.create_folder("empty", "755")
    js = sb.create_lsp_server("javascript", "empty")
    js.start()
    with pytest.raises(DaytonaError, match="No Project") as refused:
        js.sandbox_symbols("")
    assert refused.value.status_code == 400
    js.stop()


async def test_async_sdk_language_server(async_daytona) -> None:  # noqa: ANN001
    box = await async_daytona.create(CreateSandboxFromSnapshotParams())
    try:
        await box.fs.upload_file(PY.encode(), "main.py")
        home = await box.get_user_home_dir()
        lsp = box.create_lsp_server("python", home)
        await lsp.start()
        await lsp.did_open("main.py")
        items = (await lsp.completions("main.py", LspCompletionPosition(line=5, character=5))).items
        assert "path" in [item.label for item in items]
        assert "greet_person" in [s.name for s in await lsp.document_symbols("main.py")]
        await lsp.stop()
    finally:
        await box.delete()


# A language server of the user's own (~/.local/bin is first on its PATH): it keeps
# every document the agent hands it.
KEEPER = r'''#!/usr/bin/env python3
import json, sys
def message():
    size = 0
    while line := sys.stdin.buffer.readline().strip():
        if line.lower().startswith(b"content-length:"):
            size = int(line.split(b":")[1])
    return json.loads(sys.stdin.buffer.read(size)) if size else None
while (m := message()) is not None:
    if m.get("method") == "textDocument/didOpen":
        with open("/home/daytona/kept", "a") as f:
            f.write(m["params"]["textDocument"]["text"])
    if "id" in m:
        result = {"capabilities": {}} if m.get("method") == "initialize" else None
        body = json.dumps({"jsonrpc": "2.0", "id": m["id"], "result": result}).encode()
        sys.stdout.buffer.write(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        sys.stdout.buffer.flush()
'''


def test_a_users_symlink_does_not_open_roots_file_for_its_server(sb) -> None:  # noqa: ANN001
    """The language server runs as the user, and the agent reads each document for it.
    A link the user planted in the project (``main.py -> /etc/shadow``) does not make
    the agent read root's file into the user's server (see ``files.reach``); the
    user's own files, through its own links too, still open."""
    sb.fs.upload_file(KEEPER.encode(), ".local/bin/pylsp")
    assert sb.process.exec("cd ~/proj && chmod +x ~/.local/bin/pylsp && ln -s /etc/shadow "
                           "secret.py && ln -s main.py mine.py").exit_code == 0  # fmt: skip
    lsp = sb.create_lsp_server("python", "proj")
    lsp.start()
    with pytest.raises(DaytonaError, match="symbolic link of a user"):
        lsp.did_open("secret.py")
    lsp.did_open("mine.py")
    lsp.stop()
    kept = sb.process.exec("cat ~/kept").result
    assert kept == PY and "root:" not in kept
