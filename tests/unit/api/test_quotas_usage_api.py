"""Quotas (set with ``cove quota set``) and usage, through the whole app in process."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from click.testing import CliRunner
from starlette.testclient import TestClient

from cove.cli.main import main
from tests.unit.api.conftest import AUTH, create_sandbox
from tests.unit.api.test_tenancy_walk import BY_ORGANIZATION


def _quota(tmp_path: Path, *args: str) -> None:
    result = CliRunner().invoke(main, ["quota", "set", "default", *args,
                                       "--data-dir", str(tmp_path)])  # fmt: skip
    assert result.exit_code == 0, result.output


def _range() -> dict[str, str]:
    now = datetime.now(UTC)
    return {"from": (now - timedelta(hours=1)).isoformat(),
            "to": (now + timedelta(hours=1)).isoformat()}  # fmt: skip


def test_cpu_quota_counts_started_sandboxes_only(client: TestClient, tmp_path: Path) -> None:
    _quota(tmp_path, "--cpu", "1")
    first = create_sandbox(client, cpu=1)
    r = client.post("/api/sandbox", json={"cpu": 1}, headers=AUTH)
    assert r.status_code == 403, r.text
    body = r.json()
    assert body["statusCode"] == 403 and body["error"] == "Forbidden"
    assert body["code"] == "QUOTA_EXCEEDED"
    assert body["message"].startswith("Total CPU limit exceeded. Maximum allowed: 1.")
    assert len(client.get("/api/sandbox", headers=AUTH).json()["items"]) == 1  # nothing made
    assert client.post(f"/api/sandbox/{first['id']}/stop", headers=AUTH).status_code == 200
    second = create_sandbox(client, cpu=1)  # a stopped sandbox holds no CPU
    r = client.post(f"/api/sandbox/{first['id']}/start", headers=AUTH)
    assert r.status_code == 403 and r.json()["message"].startswith("Total CPU limit exceeded")
    assert client.get(f"/api/sandbox/{first['id']}", headers=AUTH).json()["state"] == "stopped"
    org = second["organizationId"]
    overview = client.get(f"/api/organizations/{org}/usage", headers=AUTH).json()
    region = overview["regionUsage"][0]
    assert (region["totalCpuQuota"], region["currentCpuUsage"]) == (1, 1)
    assert region["currentDiskUsage"] == first["disk"] + second["disk"]


def test_disk_memory_count_and_resize_quotas(client: TestClient, tmp_path: Path) -> None:
    _quota(tmp_path, "--disk", "5", "--sandboxes", "2", "--memory", "2")
    made = create_sandbox(client, disk=3, memory=1)
    r = client.post("/api/sandbox", json={"disk": 3}, headers=AUTH)
    assert r.status_code == 403 and r.json()["message"].startswith(
        "Total disk limit exceeded. Maximum allowed: 5GiB.")
    r = client.post(f"/api/sandbox/{made['id']}/resize", json={"memory": 3}, headers=AUTH)
    assert r.status_code == 403 and r.json()["message"].startswith(
        "Total memory limit exceeded. Maximum allowed: 2GiB.")
    r = client.post(f"/api/sandbox/{made['id']}/resize", json={"memory": 2}, headers=AUTH)
    assert r.status_code == 200 and r.json()["memory"] == 2
    _quota(tmp_path, "--memory", "0")
    create_sandbox(client, disk=1)
    r = client.post("/api/sandbox", json={"disk": 1}, headers=AUTH)
    assert r.status_code == 403 and r.json()["message"].startswith(
        "Sandbox quota exceeded. Maximum allowed: 2\n")


def test_per_sandbox_maximum(client: TestClient, tmp_path: Path) -> None:
    _quota(tmp_path, "--max-cpu-per-sandbox", "2")
    r = client.post("/api/sandbox", json={"cpu": 3}, headers=AUTH)
    assert r.status_code == 403
    assert r.json()["message"] == "CPU request 3 exceeds maximum allowed per sandbox (2)."


def test_volume_and_snapshot_quotas(client: TestClient, tmp_path: Path) -> None:
    _quota(tmp_path, "--volumes", "1", "--snapshots", "1")
    assert client.post("/api/volumes", json={"name": "v1"}, headers=AUTH).status_code == 200
    r = client.post("/api/volumes", json={"name": "v2"}, headers=AUTH)
    assert r.status_code == 400 and r.json()["message"].startswith(  # Daytona's 400
        "Volume quota exceeded. Maximum allowed: 1\n")
    assert r.json()["code"] == "QUOTA_EXCEEDED"
    made = create_sandbox(client)
    r = client.post(f"/api/sandbox/{made['id']}/snapshot", json={"name": "s1"}, headers=AUTH)
    assert r.status_code in (200, 201), r.text
    r = client.post(f"/api/sandbox/{made['id']}/snapshot", json={"name": "s2"}, headers=AUTH)
    assert r.status_code == 400 and r.json()["message"].startswith(
        "Snapshot quota exceeded. Maximum allowed: 1\n")
    org = made["organizationId"]
    overview = client.get(f"/api/organizations/{org}/usage", headers=AUTH).json()
    assert (overview["totalVolumeQuota"], overview["currentVolumeUsage"]) == (1, 1)
    assert (overview["totalSnapshotQuota"], overview["currentSnapshotUsage"]) == (1, 1)


def test_usage_periods_follow_the_lifecycle(client: TestClient) -> None:
    made = create_sandbox(client, cpu=2, memory=1, disk=3)
    org, sid = made["organizationId"], made["id"]
    stopped = client.post(f"/api/sandbox/{sid}/stop", headers=AUTH).json()
    periods = client.get(f"/api/analytics/organization/{org}/sandbox/{sid}/usage",
                         params=_range(), headers=AUTH).json()  # fmt: skip
    assert [(p["cpu"], p["ramGB"], p["diskGB"]) for p in periods] == [(2, 1, 3), (0, 0, 3)]
    running, resting = periods
    assert running["endAt"] == resting["startAt"] and resting["endAt"] is None
    assert resting["startAt"] == stopped["updatedAt"]  # the server's own timestamp
    start = datetime.fromisoformat(running["startAt"])
    seconds = (datetime.fromisoformat(running["endAt"]) - start).total_seconds()
    total = client.get(f"/api/analytics/organization/{org}/usage/aggregated",
                       params=_range(), headers=AUTH).json()  # fmt: skip
    assert total["sandboxCount"] == 1
    assert abs(total["totalCPUSeconds"] - round(2 * seconds)) <= 1
    per_sandbox = client.get(f"/api/analytics/organization/{org}/usage/sandbox",
                             params=_range(), headers=AUTH).json()  # fmt: skip
    assert [s["sandboxId"] for s in per_sandbox] == [sid]
    chart = client.get(f"/api/analytics/organization/{org}/usage/chart", params=_range(),
                       headers=AUTH).json()  # fmt: skip
    assert chart and {"time", "cpu", "cpuPrice", "ramGB", "diskGB", "diskPrice"} <= set(chart[0])
    client.delete(f"/api/sandbox/{sid}", headers=AUTH)
    periods = client.get(f"/api/analytics/organization/{org}/sandbox/{sid}/usage",
                         params=_range(), headers=AUTH).json()  # fmt: skip
    assert all(p["endAt"] for p in periods)  # nothing held after the delete


def test_another_organization_is_refused(client: TestClient, other_auth: dict) -> None:
    made = create_sandbox(client)
    org = made["organizationId"]
    paths = [f"/api/organizations/{org}/usage",
             f"/api/analytics/organization/{org}/usage/aggregated",
             f"/api/analytics/organization/{org}/usage/sandbox",
             f"/api/analytics/organization/{org}/usage/chart",
             f"/api/analytics/organization/{org}/sandbox/{made['id']}/usage",
             f"/api/analytics/organization/{org}/sandbox/{made['id']}/telemetry/metrics"]
    for path in paths:
        r = client.get(path, params=_range(), headers=other_auth)
        assert r.status_code == 404, (path, r.text)
        assert r.json()["message"] == "Organization not found"
        nowhere = client.get(path.replace(org, str(uuid.uuid4())), params=_range(),
                             headers=other_auth)  # fmt: skip
        assert (nowhere.status_code, nowhere.json()["message"]) == (404, r.json()["message"])
    assert {("GET", p.replace(org, "{organizationId}").replace(made["id"], "{sandboxId}"))
            for p in paths} == BY_ORGANIZATION  # every route naming an organization
    # through its own organization's path it does not reach the other's sandbox either
    mine = client.post("/api/sandbox", json={}, headers=other_auth).json()["organizationId"]
    base = f"/api/analytics/organization/{mine}/sandbox/{made['id']}"
    assert client.get(f"{base}/usage", params=_range(), headers=other_auth).json() == []
    r = client.get(f"{base}/telemetry/metrics", params=_range(), headers=other_auth)
    assert r.status_code == 404
    r = client.get(f"/api/analytics/organization/{mine}/usage/sandbox", params=_range(),
                   headers=other_auth)  # fmt: skip
    assert made["id"] not in r.text


def test_bad_ranges_are_400(client: TestClient) -> None:
    made = create_sandbox(client)
    org = made["organizationId"]
    path = f"/api/analytics/organization/{org}/usage/aggregated"
    now = datetime.now(UTC)
    for params in ({"from": now.isoformat(), "to": (now - timedelta(1)).isoformat()},
                   {"from": "2026-01-01T00:00:00", "to": "2026-01-02T00:00:00"},
                   {"to": now.isoformat()}):  # fmt: skip
        assert client.get(path, params=params, headers=AUTH).status_code == 400
