"""GET /metrics (Prometheus, for the operator only) and request ids in responses and logs."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from cove.api.app import create_app
from cove.api.metrics import Telemetry
from cove.core.config import Settings
from cove.errors import ToolboxError
from cove.runner.fake import FakeRuntime
from tests.unit.api.conftest import AUTH, create_sandbox

TOKEN = "scrape-secret"
SCRAPE = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def scraped(tmp_path: Path, runtime: FakeRuntime) -> Iterator[TestClient]:
    """The app with COVE_METRICS_TOKEN set and an operator's pool of one sandbox."""
    settings = Settings(data_dir=tmp_path, runtime="fake", api_key="test-key", port=3999,
                        metrics_token=TOKEN, pool_size=1)  # fmt: skip
    with TestClient(create_app(settings, runtime=runtime)) as c:
        yield c


def samples(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, parsed by prometheus_client's own parser."""
    r = client.get("/metrics", headers=SCRAPE)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def owned(client: TestClient, state: str) -> float:
    return samples(client)[("cove_sandboxes", (("state", state),))]


def operations(client: TestClient, operation: str) -> float:
    return samples(client).get(
        ("cove_operation_duration_seconds_count", (("operation", operation),)), 0.0)


def wait_pool_filled(client: TestClient) -> None:
    deadline = time.monotonic() + 10
    key = ("cove_pool_waiting", (("pool", "cove-operator-pool"),))
    while samples(client).get(key) != 1.0:
        assert time.monotonic() < deadline, "the operator's pool was not filled"
        time.sleep(0.05)


def test_metrics_is_a_404_without_a_configured_token(client: TestClient) -> None:
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", headers=AUTH).status_code == 404  # an API key is no token


def test_metrics_needs_the_token(scraped: TestClient) -> None:
    assert scraped.get("/metrics").status_code == 401
    assert scraped.get("/metrics", headers=AUTH).status_code == 401  # not an API key
    assert scraped.get("/metrics", headers={"Authorization": "Bearer scrape"}).status_code == 401
    assert scraped.get("/metrics", headers=SCRAPE).status_code == 200


def test_values_move_with_creates_stops_and_deletes(scraped: TestClient) -> None:
    wait_pool_filled(scraped)
    assert owned(scraped, "started") == 0
    first = create_sandbox(scraped)  # takes the pooled sandbox
    second = create_sandbox(scraped)  # the pool is refilling or empty: maybe cold
    assert owned(scraped, "started") == 2
    got = samples(scraped)
    assert got[("cove_pool_claims_total", (("pool", "cove-operator-pool"),))] >= 1
    # set to 1, grown to the 2 creates it served or would have served (see pool_demand)
    assert got[("cove_pool_size", (("pool", "cove-operator-pool"),))] == 2
    assert operations(scraped, "create") == 2
    assert scraped.post(f"/api/sandbox/{first['id']}/stop", headers=AUTH).status_code == 200
    assert (owned(scraped, "started"), owned(scraped, "stopped")) == (1, 1)
    assert operations(scraped, "stop") == 1
    for sb in (first, second):
        assert scraped.delete(f"/api/sandbox/{sb['id']}", headers=AUTH).status_code == 200
    assert (owned(scraped, "started"), owned(scraped, "stopped")) == (0, 0)
    assert operations(scraped, "delete") == 2
    got = samples(scraped)
    assert got[("cove_operation_duration_seconds_sum", (("operation", "create"),))] > 0
    assert got[("cove_host_cpus", ())] >= 1
    assert got[("cove_host_disk_free_bytes", ())] > 0
    assert got[("cove_host_memory_available_bytes", ())] > 0


def test_http_requests_are_timed_by_route_template(scraped: TestClient) -> None:
    sb = create_sandbox(scraped)
    scraped.get(f"/api/sandbox/{sb['id']}", headers=AUTH)
    scraped.get("/api/sandbox/no-such-sandbox", headers=AUTH)
    got = samples(scraped)
    route = "/api/sandbox/{id_or_name}"
    assert got[("cove_http_request_duration_seconds_count",
                (("route", route), ("status", "2xx")))] >= 1  # fmt: skip
    assert got[("cove_http_request_duration_seconds_count",
                (("route", route), ("status", "4xx")))] >= 1  # fmt: skip
    routes = {dict(labels)["route"] for (name, labels) in got
              if name == "cove_http_request_duration_seconds_count"}  # fmt: skip
    assert sb["id"] not in str(routes) and "no-such-sandbox" not in str(routes)


def test_no_client_can_grow_the_route_series(scraped: TestClient) -> None:
    """A route's label is its template whatever the path's values: a sandbox id that
    percent-encoding changes ("é", "a b") was put in the label as sent, a series of
    its own kept for ever, so any client (a key or none) grew the server with each."""
    scraped.post("/toolbox/x/process/execute", json={"command": "true"})
    before = len(samples(scraped))
    for sid in ("é1", "é2", "a b", "q;r", "%41"):
        scraped.post(f"/toolbox/{sid}/process/execute", json={"command": "true"})
        scraped.get(f"/toolbox/{sid}/files/info?path=/x", headers=AUTH)
    got = samples(scraped)
    routes = {dict(labels)["route"] for (name, labels) in got
              if name == "cove_http_request_duration_seconds_count"}  # fmt: skip
    assert "/toolbox/{sandbox_id}/process/execute" in routes
    assert not [r for r in routes if "é" in r or " " in r or ";" in r or "%" in r], routes
    assert len(got) <= before + 50  # the files/info series (one route, two classes) only


def test_no_sandbox_id_name_or_label_in_the_output(scraped: TestClient) -> None:
    sb = create_sandbox(scraped, name="tenant-secret-name",
                        labels={"tenant-secret-key": "tenant-secret-value"})  # fmt: skip
    scraped.get(f"/api/sandbox/{sb['id']}", headers=AUTH)
    text = scraped.get("/metrics", headers=SCRAPE).text
    for secret in (sb["id"], "tenant-secret-name", "tenant-secret-key", "tenant-secret-value",
                   "test-key", "default"):
        assert secret not in text


def test_agent_errors_are_counted_by_code(scraped: TestClient) -> None:
    sb = create_sandbox(scraped)
    r = scraped.get(f"/toolbox/{sb['id']}/files?path=/", headers=AUTH)  # the fake has no agent
    assert r.status_code == 503
    got = samples(scraped)
    assert got[("cove_agent_errors_total", (("code", "SANDBOX_UNAVAILABLE"),))] == 1
    assert got[("cove_http_request_duration_seconds_count",
                (("route", "/toolbox/{sandbox_id}/files"), ("status", "5xx")))] == 1  # fmt: skip


def test_the_request_id_is_echoed_and_in_the_logs(
    client: TestClient, runtime: FakeRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    sb = create_sandbox(client)
    runtime.fail_on["stop"] = "the host said no"
    with caplog.at_level(logging.WARNING, logger="cove"):
        r = client.post(f"/api/sandbox/{sb['id']}/stop", headers={**AUTH, "X-Request-Id": "req-42"})
    assert r.headers["x-request-id"] == "req-42"
    failed = [rec for rec in caplog.records if "the host said no" in rec.getMessage()]
    assert failed and all(rec.request_id == "req-42" for rec in failed)  # type: ignore[attr-defined]


@pytest.mark.parametrize("given", ["a b", "x" * 200, "<script>", ""])
def test_an_insane_request_id_is_replaced(client: TestClient, given: str) -> None:
    r = client.get("/api/health", headers={"X-Request-Id": given})
    rid = r.headers["x-request-id"]
    assert rid != given and len(rid) == 32
    assert client.get("/api/health").headers["x-request-id"] != rid  # a new one each time


def test_a_lying_agent_cannot_grow_the_error_series() -> None:
    telemetry = Telemetry(lambda: None)
    for n in range(500):
        telemetry.error(ToolboxError(500, f"CODE_{n}", "made up"))
    telemetry.error(ToolboxError(500, "lower-case {weird}", "made up"))
    codes = [s.labels["code"] for f in text_string_to_metric_families(
        telemetry.render().decode()) for s in f.samples if s.name == "cove_agent_errors_total"]
    assert len(codes) <= 65 and "OTHER" in codes
    assert "lower-case {weird}" not in codes


def test_a_refused_operation_is_not_timed(scraped: TestClient) -> None:
    sb = create_sandbox(scraped)
    assert scraped.post(f"/api/sandbox/{sb['id']}/archive", headers=AUTH).status_code == 200
    r = scraped.post("/api/sandbox", json={"cpu": 10_000}, headers=AUTH)
    assert r.status_code == 400
    assert operations(scraped, "create") == 1
    assert (operations(scraped, "stop"), operations(scraped, "archive")) == (0, 1)  # it stops
    assert scraped.post(f"/api/sandbox/{sb['id']}/start", headers=AUTH).status_code == 200
    assert (operations(scraped, "start"), operations(scraped, "restore")) == (1, 1)
