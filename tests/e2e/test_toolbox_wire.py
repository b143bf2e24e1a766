"""Wire details the SDKs rely on: live metrics, the entrypoint session, the timeout's
words, ``autoArchiveInterval: 0``; and what another organization or a hostile language
server can do to them (nothing)."""

from __future__ import annotations

import httpx
import pytest
from daytona import CreateSandboxFromSnapshotParams, DaytonaError, LspCompletionPosition

from tests.e2e.conftest import Server, run_ok
from tests.e2e.test_tenancy import _key

pytestmark = pytest.mark.e2e
GIB = 1024**3


@pytest.fixture
def sb(daytona, sandboxes):  # noqa: ANN001, ANN201
    box = daytona.create(CreateSandboxFromSnapshotParams(auto_archive_interval=0))
    sandboxes.append(box)
    return box


def test_metrics_are_the_sandboxes_own(sb) -> None:  # noqa: ANN001
    before = sb.get_metrics_latest()
    assert before.cpu_count == 1 and before.mem_total == GIB
    assert 0 < before.mem_used < before.mem_total
    assert 0 < before.disk_used < before.disk_total <= 3 * GIB
    assert 0 <= before.cpu_used_pct <= 100
    # 200 MiB held in memory and 300 MiB written to disk show up
    sb.process.exec("head -c 300M /dev/zero > big.bin && sync")
    cmd = "python3 -c 'import time; b = bytearray(200 << 20); time.sleep(60)'"
    sb.process.create_session("hold")
    sb.process.execute_session_command("hold", _async(cmd))
    run_ok(sb, "for i in $(seq 50); do pgrep -f bytearray >/dev/null && break; sleep 0.1; done;"
               " sleep 1")  # fmt: skip
    after = sb.get_metrics_latest()
    assert after.mem_used >= before.mem_used + 150 * 1024**2
    assert after.disk_used >= before.disk_used + 250 * 1024**2
    sb.process.delete_session("hold")


def _async(command: str):  # noqa: ANN202
    from daytona import SessionExecuteRequest

    return SessionExecuteRequest(command=command, run_async=True)


def test_entrypoint_session_without_an_entrypoint(sb) -> None:  # noqa: ANN001
    session = sb.process.get_entrypoint_session()
    assert session.session_id == "entrypoint" and session.commands == []
    logs = sb.process.get_entrypoint_logs()
    assert (logs.output, logs.stdout, logs.stderr) == ("", "", "")
    with pytest.raises(DaytonaError, match="reserved"):
        sb.process.create_session("entrypoint")


async def test_entrypoint_logs_follow_ends_without_an_entrypoint(async_daytona) -> None:  # noqa: ANN001
    box = await async_daytona.create(CreateSandboxFromSnapshotParams())
    try:
        seen: list[str] = []
        await box.process.get_entrypoint_logs_async(seen.append, seen.append)
        assert seen == []
        assert (await box.process.get_entrypoint_session()).commands == []
        with pytest.raises(DaytonaError, match="command execution timeout"):
            await box.process.exec("sleep 30", timeout=1)
    finally:
        await box.delete()


def test_auto_archive_zero_is_daytonas_maximum(daytona, sb) -> None:  # noqa: ANN001
    assert sb.auto_archive_interval == 43200
    sb.set_auto_archive_interval(60)
    sb.set_auto_archive_interval(0)
    assert daytona.get(sb.id).auto_archive_interval == 43200


def test_exec_timeout_says_so(sb) -> None:  # noqa: ANN001
    with pytest.raises(DaytonaError, match="command execution timeout"):
        sb.process.exec("sleep 30", timeout=1)


def test_another_organization_reaches_no_language_server_nor_metrics(
    server: Server, sb  # noqa: ANN001
) -> None:
    home = sb.get_user_home_dir()
    sb.fs.upload_file(b"import os\nos.pa\n", "m.py")
    lsp = sb.create_lsp_server("python", home)
    lsp.start()
    lsp.did_open("m.py")
    headers = {"Authorization": f"Bearer {_key(server, 'wire-other')}"}
    base = f"{server.url}/toolbox/{sb.id}"
    doc = {"languageId": "python", "pathToProject": home, "uri": "file://m.py"}
    for method, path, body in [
        ("GET", "/system/metrics", None), ("POST", "/lsp/start", doc),
        ("POST", "/lsp/did-open", doc), ("POST", "/lsp/stop", doc),
        ("POST", "/lsp/completions", {**doc, "position": {"line": 1, "character": 5}}),
        ("GET", "/lsp/document-symbols?languageId=python&uri=file://m.py&pathToProject=" + home,
         None),
        ("GET", "/process/session/entrypoint", None),
        ("GET", "/process/session/entrypoint/logs", None),
    ]:  # fmt: skip
        r = httpx.request(method, base + path, headers=headers, json=body, timeout=30)
        assert r.status_code == 404, (method, path, r.text)
    items = lsp.completions("m.py", LspCompletionPosition(line=1, character=5)).items
    assert "path" in [i.label for i in items]  # A's server still runs, untouched
    lsp.stop()


@pytest.mark.parametrize("reply", [
    "printf 'Content-Length: 999999999\\r\\n\\r\\n'; sleep 60",  # a message over the bound
    "head -c 100000 /dev/zero | tr '\\0' a; sleep 60",  # a header that never ends
    "printf 'Content-Length: 5\\r\\n\\r\\n[1,2'; exit 0",  # dies mid-message
])
def test_a_hostile_language_server_is_contained(daytona, sandboxes, reply: str) -> None:  # noqa: ANN001
    """The sandbox puts its own ``pylsp`` first on PATH: the agent refuses what it says
    and answers at once; the agent and the sandbox keep working."""
    box = daytona.create(CreateSandboxFromSnapshotParams(
        env_vars={"PATH": "/home/daytona/bin:/usr/local/bin:/usr/bin:/bin"}))  # fmt: skip
    sandboxes.append(box)
    run_ok(box, f"mkdir -p bin && printf '#!/bin/sh\\n%s\\n' \"{reply}\" > bin/pylsp"
                " && chmod +x bin/pylsp")  # fmt: skip
    with pytest.raises(DaytonaError, match="language server is not running"):
        box.create_lsp_server("python", "/home/daytona").start()
    assert run_ok(box, "echo alive") == "alive\n"
    assert "pylsp" not in run_ok(box, "ps -eo args")  # what it started was ended
