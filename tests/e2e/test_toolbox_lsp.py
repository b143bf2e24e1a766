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
