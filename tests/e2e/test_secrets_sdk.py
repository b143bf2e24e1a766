"""Secrets, TTL, auto-pause, the metrics history and /config with the official SDKs
(Python sync and async, TypeScript) against a real server; and what another
organization cannot do with them. A secret's value never appears in an answer, in the
sandbox, or in the server's log."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest
from daytona import (
    AsyncDaytona,
    CreateSandboxFromSnapshotParams,
    CreateSecretParams,
    Daytona,
    DaytonaConfig,
    DaytonaError,
    DaytonaNotFoundError,
    UpdateSecretParams,
)
from daytona.common.sandbox import SandboxState
from daytona_api_client.exceptions import NotFoundException
from daytona_api_client_async.exceptions import NotFoundException as AsyncNotFound

from tests.e2e.conftest import KEY, Server, run_ok, running_server
from tests.e2e.test_tenancy import _key
from tests.e2e.test_ts_sdk import TS, node  # noqa: F401 - the fixture

pytestmark = pytest.mark.e2e
VALUE = "sk-e2e-0123456789abcdef-never-shown"


@pytest.fixture(scope="module")
def fast_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A lifecycle minute of one second, metrics sampled every second."""
    env = {"COVE_MINUTE_SECONDS": "1", "COVE_METRICS_INTERVAL_SECONDS": "1"}
    with running_server(tmp_path_factory.mktemp("cove-ctl"), 3, env) as srv:
        yield srv


@pytest.fixture
def fast(fast_server: Server) -> Daytona:
    return Daytona(DaytonaConfig(api_key=KEY, api_url=fast_server.api_url))


@pytest.fixture
def secret_name(daytona: Daytona) -> Iterator[str]:
    made = daytona.secret.create(CreateSecretParams(name="e2e-token", value=VALUE,
                                                    hosts=["api.example.com"]))  # fmt: skip
    yield made.name
    try:
        daytona.secret.delete(made.id)
    except NotFoundException:  # the secret service raises the API client's errors
        pass


def test_secrets_mount_as_placeholders(server: Server, daytona: Daytona, secret_name: str,
                                       sandboxes: list) -> None:  # fmt: skip
    secret = next(s for s in daytona.secret.list().items if s.name == secret_name)
    assert secret.hosts == ["api.example.com"] and not hasattr(secret, "value")
    sb = daytona.create(CreateSandboxFromSnapshotParams(secrets={"API_TOKEN": secret_name}))
    sandboxes.append(sb)
    plain = daytona.create(CreateSandboxFromSnapshotParams())
    sandboxes.append(plain)
    assert run_ok(sb, 'printf %s "$API_TOKEN"') == secret.placeholder
    everything = run_ok(sb, "env; cat /proc/self/environ; ls -la ~")
    assert VALUE not in everything
    assert "API_TOKEN" not in run_ok(plain, "env")  # not visible to another sandbox
    sb.update_secrets({"OTHER": secret_name})
    assert run_ok(sb, 'printf %s "${API_TOKEN:-none}:$OTHER"') == f"none:{secret.placeholder}"
    sb.update_secrets({})
    assert "OTHER" not in run_ok(sb, "env")
    updated = daytona.secret.update(secret.id, UpdateSecretParams(value=VALUE + "-2",
                                                                  description="rotated"))
    assert updated.description == "rotated" and updated.placeholder == secret.placeholder
    with pytest.raises(DaytonaError):  # an env var name with '='
        daytona.create(CreateSandboxFromSnapshotParams(secrets={"A=B": secret_name}))
    raw = httpx.get(f"{server.api_url}/secret/{secret.id}",
                    headers={"Authorization": f"Bearer {KEY}"}).text  # fmt: skip
    assert VALUE not in raw and VALUE not in server.log.read_text()


def test_another_organization_gets_404(server: Server, daytona: Daytona, secret_name: str,
                                       sandboxes: list) -> None:  # fmt: skip
    other = Daytona(DaytonaConfig(api_key=_key(server, "secrets-other"),
                                  api_url=server.api_url))  # fmt: skip
    secret = next(s for s in daytona.secret.list().items if s.name == secret_name)
    mine = daytona.create(CreateSandboxFromSnapshotParams(secrets={"T": secret_name}))
    sandboxes.append(mine)
    with pytest.raises(NotFoundException):
        other.secret.get(secret.id)
    with pytest.raises(NotFoundException):
        other.secret.update(secret.id, UpdateSecretParams(value="stolen"))
    with pytest.raises(NotFoundException):
        other.secret.delete(secret.id)
    assert other.secret.list().items == []
    with pytest.raises(DaytonaNotFoundError):
        other.create(CreateSandboxFromSnapshotParams(secrets={"T": secret_name}))
    assert list(other.list()) == []
    with pytest.raises(DaytonaNotFoundError):
        other.get(mine.id)
    assert run_ok(mine, 'printf %s "$T"') == secret.placeholder  # unchanged


async def test_async_sdk_secrets(server: Server, async_daytona: AsyncDaytona) -> None:
    made = await async_daytona.secret.create(CreateSecretParams(name="async-s", value=VALUE))
    try:
        sb = await async_daytona.create(CreateSandboxFromSnapshotParams(secrets={"S": "async-s"}))
        try:
            out = await sb.process.exec('printf %s "$S"')
            assert out.result == made.placeholder
            await sb.set_ttl(60)
            await sb.refresh_data()
            assert sb.auto_destroy_at is not None
            await sb.set_auto_pause_interval(15)
            await sb.refresh_data()
            assert (sb.auto_pause_interval, sb.auto_stop_interval) == (15, 0)
        finally:
            await sb.delete()
        page = await async_daytona.secret.list(name="async")
        assert [s.name for s in page.items] == ["async-s"]
    finally:
        await async_daytona.secret.delete(made.id)
    with pytest.raises(AsyncNotFound):
        await async_daytona.secret.get(made.id)


def _gone(client: Daytona, sandbox_id: str, within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            client.get(sandbox_id)
        except DaytonaNotFoundError:
            return
        time.sleep(0.2)
    raise AssertionError(f"{sandbox_id} still exists after {within}s")


def test_ttl_auto_pause_and_metrics_history(fast: Daytona) -> None:
    paused = fast.create(CreateSandboxFromSnapshotParams(auto_pause_interval=2))
    stopped = fast.create(CreateSandboxFromSnapshotParams(auto_stop_interval=0))
    try:
        samples: list = []
        deadline = time.monotonic() + 60
        while len(samples) < 2 and time.monotonic() < deadline:
            samples = stopped.get_metrics()
            time.sleep(0.5)
        assert len(samples) >= 2 and samples[0].timestamp < samples[-1].timestamp
        assert samples[-1].cpu_count == stopped.cpu and samples[-1].mem_used > 0
        assert samples[-1].disk_total > samples[-1].disk_used > 0
        start = time.monotonic()
        while fast.get(paused.id).state != SandboxState.PAUSED:
            assert time.monotonic() - start < 60, "not paused by its auto-pause timer"
            time.sleep(0.2)
        stopped.stop()
        stopped.set_ttl(2)  # deleted two (one-second) minutes from now, though stopped
        paused.set_ttl(2)
        _gone(fast, stopped.id, 60)
        _gone(fast, paused.id, 60)
    finally:
        for sb in (paused, stopped):
            try:
                sb.delete()
            except DaytonaError:
                pass


def test_config_answers_without_a_key(server: Server) -> None:
    body = httpx.get(f"{server.api_url}/config").json()
    assert body["analyticsApiUrl"] == f"{server.api_url}/analytics"
    assert body["maxAutoArchiveInterval"] == 43200
    assert KEY not in json.dumps(body)


def test_typescript_sdk(fast_server: Server, node: str) -> None:  # noqa: F811
    done = subprocess.run([node, "secrets_check.js", fast_server.api_url, KEY, VALUE], cwd=TS,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert VALUE not in done.stdout
    out = json.loads(done.stdout.strip().splitlines()[-1])
    placeholder = out["secret"]["placeholder"]
    assert out["env"] == placeholder and out["afterUpdate"] == f":{placeholder}"
    assert out["autoPause"] == [30, 0] and out["autoPauseOff"] == 0
    assert out["autoDestroyAt"]
    assert out["list"] == {"total": 1, "names": ["ts-secret"]}
    assert out["got"]["hosts"] == ["api.example.com"] and out["updated"]["description"] == "ts"
    assert out["samples"] >= 2 and out["sample"]["memUsed"] > 0
    assert "404" in out["afterDelete"] or "not found" in out["afterDelete"].lower()
    assert VALUE not in fast_server.log.read_text()
