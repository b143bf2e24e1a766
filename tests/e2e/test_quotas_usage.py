"""Quotas and usage against a real ``cove serve``, through the official SDK and the
generated API clients (daytona_api_client, daytona_analytics_api_client)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import daytona_analytics_api_client as analytics
import daytona_api_client as api
import pytest
from daytona import (
    AsyncDaytona,
    CreateSandboxFromImageParams,
    Daytona,
    DaytonaBadRequestError,
    DaytonaConfig,
    DaytonaForbiddenError,
    Resources,
)

from tests.e2e.conftest import Server

pytestmark = pytest.mark.e2e


def _quota(server: Server, org: str, *args: str) -> None:
    command = [sys.executable, "-m", "cove.cli.main", "quota", "set", org, *args,
               "--data-dir", str(server.data_dir)]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)


def _api(server: Server, key: str) -> api.ApiClient:
    client = api.ApiClient(api.Configuration(host=server.api_url))
    client.default_headers["Authorization"] = f"Bearer {key}"
    return client


def _usage(server: Server, key: str) -> analytics.UsageApi:
    """The analytics API where /api/config says it is (as the SDKs find it)."""
    url = api.ConfigApi(_api(server, key)).config_controller_get_config().analytics_api_url
    assert url == f"{server.api_url}/analytics"
    client = analytics.ApiClient(analytics.Configuration(host=url))
    client.default_headers["Authorization"] = f"Bearer {key}"
    return analytics.UsageApi(client)


def _window() -> tuple[str, str]:
    now = datetime.now(UTC)
    return (now - timedelta(hours=1)).isoformat(), (now + timedelta(hours=1)).isoformat()


def _at(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


@contextmanager
def _cleanup(client: Daytona) -> Iterator[list]:
    """Sandboxes (and volumes, snapshots by name) appended here are deleted afterwards."""
    made: list = []
    try:
        yield made
    finally:
        for item in made:
            try:
                if isinstance(item, tuple):
                    kind, name = item
                    found = getattr(client, kind).get(name)
                    getattr(client, kind).delete(found)
                else:
                    item.delete()
            except Exception:  # noqa: BLE001 - already gone
                pass


def test_quota_exceeded_on_create_start_resize_volume_and_snapshot(server: Server) -> None:
    key = server.org_key("quota-e2e")
    _quota(server, "quota-e2e", "--cpu", "2", "--volumes", "1", "--snapshots", "1")
    client = Daytona(DaytonaConfig(api_key=key, api_url=server.api_url))
    with _cleanup(client) as made:
        a, b = client.create(), client.create()
        made += [a, b]
        with pytest.raises(DaytonaForbiddenError, match=r"Total CPU limit exceeded\. Maximum "
                                                        r"allowed: 2\."):
            client.create()
        orgs = api.OrganizationsApi(_api(server, key))
        region = orgs.get_organization_usage_overview(a.organization_id).region_usage[0]
        assert (region.total_cpu_quota, region.current_cpu_usage) == (2, 2)
        assert region.current_disk_usage == a.disk + b.disk
        b.stop()
        a.resize(Resources(cpu=2))  # b's CPU is free while it is stopped
        with pytest.raises(DaytonaForbiddenError, match="Total CPU limit exceeded"):
            b.start()
        with pytest.raises(DaytonaForbiddenError, match="Total CPU limit exceeded"):
            a.resize(Resources(cpu=3))
        assert client.get(b.id).state == "stopped" and client.get(a.id).cpu == 2
        client.volume.create("quota-e2e-vol")
        made.append(("volume", "quota-e2e-vol"))
        with pytest.raises(DaytonaBadRequestError, match="Volume quota exceeded"):  # a 400
            client.volume.create("quota-e2e-vol-2")
        b.create_snapshot("quota-e2e-snap", timeout=300)
        made.append(("snapshot", "quota-e2e-snap"))
        with pytest.raises(DaytonaBadRequestError, match="Snapshot quota exceeded"):
            b.create_snapshot("quota-e2e-snap-2", timeout=300)
        overview = orgs.get_organization_usage_overview(a.organization_id)
        assert (overview.total_volume_quota, overview.current_volume_usage) == (1, 1)
        assert (overview.total_snapshot_quota, overview.current_snapshot_usage) == (1, 1)


def test_concurrent_creates_never_both_pass_a_quota(server: Server) -> None:
    key = server.org_key("quota-race")
    _quota(server, "quota-race", "--cpu", "1")

    async def race() -> list[object]:
        async with AsyncDaytona(DaytonaConfig(api_key=key, api_url=server.api_url)) as client:
            return await asyncio.gather(*(client.create() for _ in range(4)),
                                        return_exceptions=True)  # fmt: skip

    results = asyncio.run(race())
    made = [r for r in results if not isinstance(r, BaseException)]
    client = Daytona(DaytonaConfig(api_key=key, api_url=server.api_url))
    for sb in made:
        client.delete(client.get(sb.id))  # type: ignore[attr-defined]
    assert len(made) == 1, results
    assert all(isinstance(r, DaytonaForbiddenError) for r in results if r not in made)


def test_usage_is_allocated_times_seconds_and_grows(server: Server) -> None:
    key = server.org_key("usage-e2e")
    client = Daytona(DaytonaConfig(api_key=key, api_url=server.api_url))
    usage = _usage(server, key)
    with _cleanup(client) as made:
        sb = client.create(CreateSandboxFromImageParams(
            image="cove-default", resources=Resources(cpu=2, memory=1, disk=3)))  # fmt: skip
        made.append(sb)
        time.sleep(1.5)  # some usage to count (the check below uses the server's times)
        sb.stop()
        org, window = sb.organization_id, _window()
        periods = usage.organization_organization_id_sandbox_sandbox_id_usage_get(
            org, sb.id, *window)
        *ran, resting = periods
        assert [(p.cpu, p.ram_gb, p.disk_gb) for p in ran] == [(2, 1, 3)] * len(ran)
        assert (resting.cpu, resting.ram_gb, resting.disk_gb, resting.end_at) == (0, 0, 3, None)
        assert ran and all(a.end_at == b.start_at
                           for a, b in zip(periods, periods[1:], strict=False))
        seconds = (_at(ran[-1].end_at) - _at(ran[0].start_at)).total_seconds()
        assert seconds > 0
        first = usage.organization_organization_id_usage_aggregated_get(org, *window)
        assert first.sandbox_count == 1
        assert abs(first.total_cpu_seconds - 2 * seconds) <= 1
        assert abs(first.total_ramgb_seconds - seconds) <= 1
        assert first.total_price > 0
        time.sleep(1.1)  # the disk period is still open: its GiB-seconds grow
        later = usage.organization_organization_id_usage_aggregated_get(org, *window)
        assert later.total_disk_gb_seconds > first.total_disk_gb_seconds
        assert later.total_cpu_seconds == first.total_cpu_seconds  # stopped: no more CPU
        per_sandbox = usage.organization_organization_id_usage_sandbox_get(org, *window)
        assert [s.sandbox_id for s in per_sandbox] == [sb.id]
        chart = usage.organization_organization_id_usage_chart_get(org, *window)
        assert sum(p.cpu for p in chart) == pytest.approx(first.total_cpu_seconds, abs=2)
        sb.start()
        assert isinstance(sb.get_metrics(), list)  # the SDK reads them from the analytics URL


def test_another_organization_cannot_read_usage(server: Server) -> None:
    key, other = server.org_key("usage-owner"), server.org_key("usage-thief")
    client = Daytona(DaytonaConfig(api_key=key, api_url=server.api_url))
    with _cleanup(client) as made:
        sb = client.create()
        made.append(sb)
        org = sb.organization_id
        with pytest.raises(api.ApiException) as refused:
            api.OrganizationsApi(_api(server, other)).get_organization_usage_overview(org)
        assert refused.value.status == 404
        thief = _usage(server, other)
        for call in (lambda: thief.organization_organization_id_usage_aggregated_get(
                         org, *_window()),
                     lambda: thief.organization_organization_id_sandbox_sandbox_id_usage_get(
                         org, sb.id, *_window())):  # fmt: skip
            with pytest.raises(analytics.ApiException) as denied:
                call()
            assert denied.value.status == 404
        theirs = Daytona(DaytonaConfig(api_key=other, api_url=server.api_url)).create()
        try:  # through its own organization: the sandbox is nowhere
            own = theirs.organization_id
            assert thief.organization_organization_id_sandbox_sandbox_id_usage_get(
                own, sb.id, *_window()) == []
            ids = [s.sandbox_id for s in thief.organization_organization_id_usage_sandbox_get(
                own, *_window())]
            assert ids == [theirs.id]
        finally:
            theirs.delete()


def test_usage_survives_a_kill9(server: Server) -> None:
    key = server.org_key("usage-crash")
    client = Daytona(DaytonaConfig(api_key=key, api_url=server.api_url))
    with _cleanup(client) as made:
        kept, victim = client.create(), client.create()
        made += [kept, victim]
        usage = _usage(server, key)
        org = kept.organization_id
        server.kill9()
        down = datetime.now(UTC)
        server.runtime().stop(victim.id, force=True)  # it dies while the server is down
        server.start()
        client = Daytona(DaytonaConfig(api_key=key, api_url=server.api_url))
        window = _window()
        periods = usage.organization_organization_id_sandbox_sandbox_id_usage_get(
            org, kept.id, *window)
        assert [(p.cpu, p.end_at) for p in periods] == [(1, None)]  # it ran all along
        died = usage.organization_organization_id_sandbox_sandbox_id_usage_get(
            org, victim.id, *window)
        # Its CPU ends at its last mark before the crash (every COVE_USAGE_HEARTBEAT_SECONDS;
        # none yet: at its start, an empty period); its disk goes on from there.
        *ran, rest = died
        assert [(p.cpu, p.disk_gb) for p in ran] in ([], [(1, 3)])
        assert (rest.cpu, rest.disk_gb, rest.end_at) == (0, 3, None)
        assert _at(rest.start_at) <= down
        assert all(p.end_at == rest.start_at for p in ran)
        client.get(kept.id).stop()
        periods = usage.organization_organization_id_sandbox_sandbox_id_usage_get(
            org, kept.id, *window)
        seconds = (_at(periods[0].end_at) - _at(periods[0].start_at)).total_seconds()
        one = usage.organization_organization_id_usage_sandbox_get(org, *window)
        cpu = {s.sandbox_id: s.total_cpu_seconds for s in one}
        assert abs(cpu[kept.id] - seconds) <= 1  # the downtime counted: it ran
