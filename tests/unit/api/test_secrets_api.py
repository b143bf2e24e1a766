"""Secrets, TTL, auto-pause, metrics history and /config through the HTTP API (in
process, fake runtime): what each organization can see and do, and that a secret's
value never comes back in any answer, error or log line."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from cove.schemas.toolbox_system import SystemMetrics
from cove.server import Services
from tests.unit.api.conftest import AUTH, create_sandbox

VALUE = "sk-live-0123456789-never-shown"


def _services(client: TestClient) -> Services:
    app = client.app
    while not isinstance(app, FastAPI):
        app = getattr(app, "app", None) or app.other_asgi_app  # type: ignore[union-attr]
    return app.state.services


@pytest.fixture
def answers() -> list[str]:
    return []


def _call(client: TestClient, answers: list[str], method: str, url: str,
          auth: dict[str, str] = AUTH, **kw: object):  # fmt: skip
    r = client.request(method, url, headers=auth, **kw)  # type: ignore[arg-type]
    answers.append(r.text)
    return r


def test_secret_crud_never_returns_the_value(
    client: TestClient, answers: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    r = _call(client, answers, "POST", "/api/secret",
              json={"name": "anthropic", "value": VALUE, "hosts": ["api.anthropic.com"]})
    assert r.status_code == 201, r.text
    made = r.json()
    assert set(made) == {"id", "name", "description", "placeholder", "hosts", "createdAt",
                         "updatedAt"}  # fmt: skip
    assert made["hosts"] == ["api.anthropic.com"] and made["placeholder"]
    sid = made["id"]
    assert _call(client, answers, "GET", f"/api/secret/{sid}").json()["name"] == "anthropic"
    page = _call(client, answers, "GET", "/api/secret/paginated").json()
    assert page["total"] == 1 and page["nextCursor"] is None
    r = _call(client, answers, "PATCH", f"/api/secret/{sid}", json={"value": VALUE + "2"})
    assert r.status_code == 200 and r.json()["hosts"] == ["api.anthropic.com"]
    # Refusals name the problem, never the value.
    assert _call(client, answers, "POST", "/api/secret",
                 json={"name": "anthropic", "value": VALUE}).status_code == 409
    for bad in ({"name": "bad name", "value": VALUE}, {"name": "x", "value": VALUE * 2000},
                {"name": "x", "value": VALUE, "hosts": ["h:443"]},
                {"name": "x", "value": VALUE + "\u0000"}):  # fmt: skip
        assert _call(client, answers, "POST", "/api/secret", json=bad).status_code == 400
    sb = create_sandbox(client, secrets=[{"API_KEY": "anthropic"}])
    answers.append(str(sb))
    assert _call(client, answers, "DELETE", f"/api/secret/{sid}").status_code == 204
    assert _call(client, answers, "GET", f"/api/secret/{sid}").status_code == 404
    assert not [a for a in answers if VALUE in a]
    assert not [r for r in caplog.records if VALUE in r.getMessage()]


def test_mounted_secrets_reach_only_their_sandbox_as_placeholders(client: TestClient) -> None:
    placeholder = client.post("/api/secret", json={"name": "tok", "value": VALUE},
                              headers=AUTH).json()["placeholder"]  # fmt: skip
    sb = create_sandbox(client, env={"PLAIN": "1"}, secrets=[{"TOKEN": "tok"}])
    plain = create_sandbox(client)
    toolbox, lifecycle = _services(client).toolbox, _services(client).lifecycle
    env = toolbox.env(lifecycle.get(sb["organizationId"], sb["id"]))
    assert env == {"PLAIN": "1", "TOKEN": placeholder}
    assert "TOKEN" not in toolbox.env(lifecycle.get(sb["organizationId"], plain["id"]))
    forked = client.post(f"/api/sandbox/{sb['id']}/fork", json={}, headers=AUTH).json()
    assert toolbox.env(lifecycle.get(sb["organizationId"], forked["id"]))["TOKEN"] == placeholder
    r = client.put(f"/api/sandbox/{plain['id']}/secrets", json={"secrets": [{"T2": "tok"}]},
                   headers=AUTH)  # fmt: skip
    assert r.status_code == 200 and r.json()["id"] == plain["id"]
    assert toolbox.env(lifecycle.get(sb["organizationId"], plain["id"]))["T2"] == placeholder
    client.put(f"/api/sandbox/{sb['id']}/secrets", json={"secrets": []}, headers=AUTH)
    assert toolbox.env(lifecycle.get(sb["organizationId"], sb["id"])) == {"PLAIN": "1"}


@pytest.mark.parametrize("mounts", [
    [{"A=B": "tok"}], [{"": "tok"}], [{"A\u0000": "tok"}], [{"A": "bad name"}],
    [{"PLAIN": "tok"}], [{"A": "tok"}, {"A": "tok"}], [{f"V{i}": "tok"} for i in range(600)],
])  # fmt: skip
def test_env_names_are_checked_and_nothing_is_created(client: TestClient, mounts: list) -> None:
    client.post("/api/secret", json={"name": "tok", "value": VALUE}, headers=AUTH)
    r = client.post("/api/sandbox", json={"env": {"PLAIN": "1"}, "secrets": mounts},
                    headers=AUTH)  # fmt: skip
    assert r.status_code == 400, r.text
    assert client.get("/api/sandbox", headers=AUTH).json()["items"] == []


def test_another_organization_cannot_read_use_or_attach(
    client: TestClient, other_auth: dict[str, str]
) -> None:
    made = client.post("/api/secret", json={"name": "tok", "value": VALUE},
                       headers=AUTH).json()  # fmt: skip
    mine = create_sandbox(client, secrets=[{"TOKEN": "tok"}])
    for method, url, body in (("GET", f"/api/secret/{made['id']}", None),
                              ("PATCH", f"/api/secret/{made['id']}", {"value": "stolen"}),
                              ("DELETE", f"/api/secret/{made['id']}", None),
                              ("PUT", f"/api/sandbox/{mine['id']}/secrets", {"secrets": []})):
        r = client.request(method, url, json=body, headers=other_auth)
        assert r.status_code == 404, (method, url, r.text)
    assert client.get("/api/secret/paginated", headers=other_auth).json()["items"] == []
    theirs = client.post("/api/sandbox", json={"secrets": [{"T": "tok"}]}, headers=other_auth)
    none = client.post("/api/sandbox", json={"secrets": [{"T": "nope"}]}, headers=other_auth)
    assert theirs.status_code == none.status_code == 404
    assert theirs.json()["message"].replace("tok", "X") == none.json()["message"].replace(
        "nope", "X")
    assert client.get("/api/sandbox", headers=other_auth).json()["items"] == []
    own = client.post("/api/sandbox", json={}, headers=other_auth).json()
    r = client.put(f"/api/sandbox/{own['id']}/secrets", json={"secrets": [{"T": "tok"}]},
                   headers=other_auth)  # fmt: skip
    assert r.status_code == 404
    services = _services(client)
    assert services.secrets.env(own["id"]) == {}
    assert services.secrets.env(mine["id"]) == {"TOKEN": made["placeholder"]}
    assert services.secrets.store.value(mine["organizationId"], made["id"]) == VALUE


def test_ttl_and_auto_pause_routes(client: TestClient) -> None:
    sb = create_sandbox(client)
    assert (sb["autoPauseInterval"], sb["autoDestroyAt"]) == (0, None)
    r = client.post(f"/api/sandbox/{sb['id']}/autopause/30", headers=AUTH)
    assert r.status_code == 200 and (r.json()["autoPauseInterval"], r.json()["autoStopInterval"]
                                     ) == (30, 0)  # fmt: skip
    r = client.post(f"/api/sandbox/{sb['id']}/ttl/60", headers=AUTH)
    at = datetime.fromisoformat(r.json()["autoDestroyAt"].replace("Z", "+00:00"))
    assert timedelta(minutes=59) < at - datetime.now(UTC) <= timedelta(minutes=60)
    r = client.post(f"/api/sandbox/{sb['id']}/ttl/0", headers=AUTH)
    assert r.json()["autoDestroyAt"] is None
    assert client.post(f"/api/sandbox/{sb['id']}/ttl/-1", headers=AUTH).status_code == 400
    r = client.post("/api/sandbox", json={"autoStopInterval": 5, "autoPauseInterval": 5},
                    headers=AUTH)  # fmt: skip
    assert r.status_code == 400 and "autoPauseInterval" in r.json()["message"]
    made = create_sandbox(client, ttlMinutes=10)
    assert made["autoDestroyAt"] is not None


def test_metrics_history_answers_in_daytonas_shape(client: TestClient) -> None:
    sb = create_sandbox(client)
    history = _services(client).metrics
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    for minute in range(3):
        at = (t0 + timedelta(minutes=minute)).isoformat().replace("+00:00", "Z")
        history.record(sb["id"], SystemMetrics(cpu_count=2, cpu_used_pct=10.0 * minute,
                                               mem_used=1000 + minute, timestamp=at))  # fmt: skip
    params = {"from": "2030-01-01T00:00:30Z", "to": "2030-01-01T00:02:00Z",
              "metricNames": ["daytona.sandbox.cpu.utilization", "daytona.sandbox.memory.usage"]}
    body = client.get(f"/api/sandbox/{sb['id']}/telemetry/metrics", params=params,
                      headers=AUTH).json()  # fmt: skip
    series = {s["metricName"]: s["dataPoints"] for s in body["series"]}
    at1, at2 = "2030-01-01T00:01:00.000Z", "2030-01-01T00:02:00.000Z"
    assert series == {
        "daytona.sandbox.cpu.utilization": [{"timestamp": at1, "value": 10.0},
                                            {"timestamp": at2, "value": 20.0}],
        "daytona.sandbox.memory.usage": [{"timestamp": at1, "value": 1001.0},
                                         {"timestamp": at2, "value": 1002.0}],
    }  # fmt: skip
    r = client.get(f"/api/sandbox/{sb['id']}/telemetry/metrics", headers=AUTH,
                   params={"from": "2030-01-01T00:00:00", "to": "2030-01-02T00:00:00Z"})
    assert r.status_code == 400  # a time without zone
    client.delete(f"/api/sandbox/{sb['id']}", headers=AUTH)
    assert history.series(sb["id"], t0, t0 + timedelta(days=1), None) == {
        name: [] for name in history.series("none", t0, t0, None)}


def test_config_needs_no_key_and_holds_no_secret(client: TestClient) -> None:
    r = client.get("/api/config")
    assert r.status_code == 200
    body = r.json()
    assert body["analyticsApiUrl"].endswith("/api/analytics") and body["defaultSnapshot"]
    assert "test-key" not in r.text


def test_an_organization_holds_a_bounded_number_of_secrets(
    client: TestClient, answers: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("cove.core.secrets.MAX_SECRETS", 3)
    for i in range(3):
        assert _call(client, answers, "POST", "/api/secret",
                     json={"name": f"s{i}", "value": VALUE}).status_code == 201  # fmt: skip
    r = _call(client, answers, "POST", "/api/secret", json={"name": "s3", "value": VALUE})
    assert r.status_code == 400 and r.json()["code"] == "QUOTA_EXCEEDED", r.text
    assert "at most 3 secrets" in r.json()["message"]
    page = _call(client, answers, "GET", "/api/secret/paginated").json()
    assert page["total"] == 3
