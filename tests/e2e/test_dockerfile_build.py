"""Creating a sandbox from a Dockerfile (``Image``) with streamed build logs."""

from __future__ import annotations

import hashlib
import time

import httpx
import pytest
from daytona import (
    CreateSandboxFromImageParams,
    Daytona,
    DaytonaError,
    Image,
)
from daytona.common.sandbox import SandboxState

from tests.e2e.conftest import KEY, Server

pytestmark = pytest.mark.e2e


def _created_sandbox(daytona: Daytona, before: set[str]) -> list[str]:
    return [sb.id for sb in daytona.list() if sb.id not in before]


def test_build_streams_logs_and_is_reused(
    server: Server, daytona: Daytona, sandboxes: list
) -> None:
    image = (
        Image.base("cove-default")
        .env({"GREETING": "hi there"})
        .workdir("/opt/app")
        .run_commands("echo hello > /root/x", "echo built-$GREETING > marker; echo step-out")
    )
    chunks: list[str] = []
    sb = daytona.create(
        CreateSandboxFromImageParams(image=image), on_snapshot_create_logs=chunks.append,
        timeout=300,
    )  # fmt: skip
    sandboxes.append(sb)
    log = "\n".join(chunks)
    assert sb.state == SandboxState.STARTED
    assert "Step 4/4 : RUN echo built-$GREETING > marker; echo step-out" in log
    assert "step-out" in log.split("Step 4/4")[1]
    assert "Using cached" not in log
    assert server.runtime().exec(sb.id, ["cat", "/root/x"], user="root").stdout == b"hello\n"
    assert sb.process.exec("cat /opt/app/marker").result.strip() == "built-hi there"
    assert sb.process.exec("echo $GREETING").result.strip() == "hi there"

    again: list[str] = []
    sb2 = daytona.create(
        CreateSandboxFromImageParams(image=image), on_snapshot_create_logs=again.append,
        timeout=120,
    )  # fmt: skip
    sandboxes.append(sb2)
    assert sb2.state == SandboxState.STARTED
    assert "Using cached snapshot" in "\n".join(again)
    assert "step-out" not in "\n".join(again)
    sb.refresh_data()  # the create call answered while the build was pending
    assert sb2.snapshot == sb.snapshot != "cove-default"


def test_logs_arrive_while_the_build_runs(daytona: Daytona, sandboxes: list) -> None:
    # One RUN: its lines must reach the log as they are printed, not when it ends. The
    # client may start reading the log late (by 1.2 s in a loaded CI run: its first chunk
    # then brings early-line), so the RUN waits well past the 2 s asserted.
    image = Image.base("cove-default").run_commands("echo early-line; sleep 8; echo late-line")
    seen: list[tuple[float, str]] = []
    sb = daytona.create(
        CreateSandboxFromImageParams(image=image),
        on_snapshot_create_logs=lambda chunk: seen.append((time.monotonic(), chunk)),
        timeout=120,
    )  # fmt: skip
    sandboxes.append(sb)
    def printed(word: str) -> float:  # the RUN's output line, not the step header
        return next(t for t, chunk in seen if word in chunk.splitlines())

    early, late = printed("early-line"), printed("late-line")
    assert late - early > 2, seen


def test_failing_run_is_build_failed(server: Server, daytona: Daytona, sandboxes: list) -> None:
    before = {sb.id for sb in daytona.list()}
    image = Image.base("cove-default").run_commands("echo before-fail", "echo oops >&2; exit 3")
    chunks: list[str] = []
    with pytest.raises(DaytonaError, match="(?i)build_failed") as info:
        daytona.create(
            CreateSandboxFromImageParams(image=image), on_snapshot_create_logs=chunks.append,
            timeout=120,
        )  # fmt: skip
    message = str(info.value)
    assert "step 2/2 'RUN echo oops >&2; exit 3'" in message
    assert "exit code 3" in message and "oops" in message
    assert "before-fail" in "\n".join(chunks) and "oops" in "\n".join(chunks)
    created = _created_sandbox(daytona, before)
    assert len(created) == 1
    failed = daytona.get(created[0])
    sandboxes.append(failed)
    assert failed.state == SandboxState.BUILD_FAILED
    assert not [i for i in server.runtime().list_ids() if i.startswith("build-")]
    digest = hashlib.sha256(image.dockerfile().strip().encode()).hexdigest()[:16]
    assert f"dockerfile-{digest}" not in {s.name for s in daytona.snapshot.list().items}


def test_copy_without_an_uploaded_context_is_refused(server: Server) -> None:
    """The SDK uploads COPY's context first (see test_build_contexts), so this is the raw
    request: no context, or one never uploaded, is a 400 and nothing is created."""
    body: dict = {"buildInfo": {"dockerfileContent": "FROM cove-default\nCOPY a /b\n"}}
    response = httpx.post(f"{server.api_url}/sandbox", json=body,
                          headers={"Authorization": f"Bearer {KEY}"})  # fmt: skip
    assert response.status_code == 400
    assert "need an uploaded build context" in response.text
    body["buildInfo"]["contextHashes"] = ["f" * 32]
    response = httpx.post(f"{server.api_url}/sandbox", json=body,
                          headers={"Authorization": f"Bearer {KEY}"})  # fmt: skip
    assert response.status_code == 400 and "was not uploaded" in response.text


def test_deleting_a_building_snapshot_removes_its_build_sandbox(server: Server) -> None:
    """Its delete frees what the snapshot quota counted: the build sandbox running its
    RUN must go with it, not run on (up to half an hour) uncounted and unlisted."""
    headers = {"Authorization": f"Bearer {KEY}"}
    body = {"name": "endless-build",
            "buildInfo": {"dockerfileContent": "FROM cove-default\nRUN sleep 600\n"}}
    made = httpx.post(f"{server.api_url}/snapshots", json=body, headers=headers, timeout=60)
    assert made.status_code in (200, 201), made.text

    def workers() -> list[str]:
        return [i for i in server.runtime().list_ids() if i.startswith("build-")]

    deadline = time.monotonic() + 120
    while not workers() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert workers()
    time.sleep(1)  # its RUN runs
    gone = httpx.delete(f"{server.api_url}/snapshots/endless-build", headers=headers, timeout=60)
    assert gone.status_code == 200, gone.text
    deadline = time.monotonic() + 30
    while workers() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert workers() == []
    names = [s["name"] for s in httpx.get(f"{server.api_url}/snapshots", headers=headers,
                                          timeout=30).json()["items"]]  # fmt: skip
    assert "endless-build" not in names
